#!/usr/bin/env bash
# Start the CellProfiler 5 GUI with SuperResolveRLS (this repository's plugins/ folder).
#
#   gui/cellprofiler_gui.sh [PIPELINE.cppipe] [more cellprofiler options]
#
# Uses the environment made by scripts/install_gui.sh: ./.venv's Python with Debian's wxPython
# linked in .venv/gui-path (or ./.venv-gui where the ABIs differ), and gui/sitecustomize.py,
# the float->int shim that Debian's wxPython 4.2.0 needs under CellProfiler 5. The plugins
# folder is given for this session only (--plugins-directory); the preference stays as it was.
# RLS_GUI_PYTHON=/path/to/python uses another Python that has wxPython (conda, ...).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${RLS_GUI_PYTHON:-}" ]; then
  PY=$RLS_GUI_PYTHON; WX_PATH=""
elif [ -x "$ROOT/.venv-gui/bin/python" ]; then
  PY=$ROOT/.venv-gui/bin/python; WX_PATH=""
else
  PY=$ROOT/.venv/bin/python; WX_PATH=$ROOT/.venv/gui-path
fi
export PYTHONPATH="${WX_PATH:+$WX_PATH:}$ROOT/gui${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import wx" 2>/dev/null; then
  echo "cellprofiler_gui: wxPython is not importable by $PY: run scripts/install_gui.sh (see docs/gui.md)" >&2
  exit 1
fi
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  echo "cellprofiler_gui: no display (DISPLAY is unset). On a headless machine: xvfb-run -a $0 ..." >&2
  exit 1
fi
args=()
if [ $# -gt 0 ] && [[ "$1" == *.cppipe || "$1" == *.cpproj ]]; then
  args=(-p "$1")
  shift
fi
unset MPLBACKEND  # CellProfiler's figures need matplotlib's wx backend
exec "$PY" -m cellprofiler --plugins-directory "$ROOT/plugins" "${args[@]}" "$@"
