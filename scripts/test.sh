#!/usr/bin/env bash
# Run the test suite (installs into ./.venv first if needed; see scripts/install.sh).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k search` or `-m gui`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q --durations=15 "$@"
