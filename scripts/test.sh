#!/usr/bin/env bash
# Run the test suite (installs into ./.venv first if needed; see scripts/install.sh).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k search`.
# Without arguments the opt-in GUI tests (tests/gui, marker `gui`) run afterwards too when
# the GUI packages are installed (scripts/install_gui.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export MPLBACKEND=Agg
.venv/bin/python -m pytest -q --durations=15 "$@"
if [ $# -eq 0 ] && command -v Xvfb >/dev/null && { [ -e .venv/gui-path/wx ] || [ -x .venv-gui/bin/python ]; }; then
  echo "[test] GUI packages found: running the GUI tests"
  .venv/bin/python -m pytest -q -m gui tests/gui
fi
