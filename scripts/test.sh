#!/usr/bin/env bash
# Run the test suite (installs into ./.venv first if needed; see scripts/install.sh).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k search`.
# Without arguments the opt-in GUI tests (tests/gui, marker `gui`) run afterwards too when
# the GUI packages are installed (scripts/install_gui.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export MPLBACKEND=Agg
.venv/bin/python -m pytest -q -rs --durations=15 "$@"  # -rs: every skip is listed with its reason
# The GUI screenshot tests (tests/gui, marker `gui`). In CI (CI=true) they must run: this
# installs what they need (Debian's wxPython and Xvfb, scripts/install_gui.sh) and a GUI test
# that cannot run fails the build. Elsewhere they run when those are installed, and are
# skipped with a printed reason otherwise.
if [ $# -eq 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "[test] CI: installing the GUI test's packages (scripts/install_gui.sh) and running tests/gui"
    bash scripts/install_gui.sh
    RLS_GUI_REQUIRED=1 .venv/bin/python -m pytest -q -m gui tests/gui
  elif command -v Xvfb >/dev/null && [ -d /usr/lib/python3/dist-packages/wx ]; then
    echo "[test] wxPython and Xvfb found: linking them for the GUI tests and running those"
    bash scripts/install_gui.sh
    .venv/bin/python -m pytest -q -m gui tests/gui
  else
    echo "[test] GUI tests skipped: Debian's wxPython (python3-wxgtk4.0) and Xvfb are not installed." \
         "To run them: bash scripts/install_gui.sh && bash scripts/test.sh (CI=true does both)."
  fi
fi
