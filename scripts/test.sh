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
if [ $# -eq 0 ] && command -v Xvfb >/dev/null && [ -d /usr/lib/python3/dist-packages/wx ]; then
  echo "[test] wxPython and Xvfb found: linking them for the GUI tests and running those"
  bash scripts/install_gui.sh
  .venv/bin/python -m pytest -q -m gui tests/gui
fi
