#!/usr/bin/env bash
# Make the CellProfiler 5 GUI work with SuperResolveRLS on Debian 12 / Ubuntu (idempotent).
# Runs on top of scripts/install.sh (./.venv with CellProfiler 5 + rls_core) and prints what it did.
#
# Why each step (details in docs/gui.md):
# - wxPython has no Linux wheels on PyPI and builds from source for ~1 h; Debian ships it as
#   python3-wxgtk4.0 (wxPython 4.2.0) for /usr/bin/python3. When ./.venv's Python has the same
#   extension ABI (cpython-311 here), a folder holding a `wx` link to Debian's package
#   (.venv/gui-path, put on PYTHONPATH by gui/cellprofiler_gui.sh and the GUI tests) is enough;
#   .venv itself stays free of system packages. Otherwise a separate .venv-gui is made from
#   /usr/bin/python3 with --system-site-packages.
# - The CellProfiler 5 GUI imports `appose` without declaring it.
# - wxPython 4.2.0 rejects floats that CellProfiler 5 passes: gui/sitecustomize.py (on the same
#   PYTHONPATH) rounds them; this script checks that it is active.
# - xvfb/xauth: a virtual display for the GUI tests (tests/gui); xdotool/imagemagick: to drive and
#   screenshot the GUI by hand on a headless machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
GUI_VENV=${GUI_VENV:-.venv-gui}
APT_PACKAGES=(python3-wxgtk4.0 xvfb xauth xdotool imagemagick)
say() { echo "[install_gui] $*"; }
filter() { grep -v "is ignored: it is neither a file nor a directory" || true; }

# 1. system packages
if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  say "this script is for Debian/Ubuntu (apt); on other systems see docs/gui.md" >&2
  exit 1
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" \
    | grep -E "^(Setting up|E:)" || true
else
  say "system packages already installed: ${APT_PACKAGES[*]}"
fi
SYS_PY=/usr/bin/python3
SYS_WX=$($SYS_PY -c "import os, wx; print(os.path.dirname(wx.__file__))")
say "Debian's wxPython: $($SYS_PY -c 'import wx; print(wx.__version__)') in $SYS_WX"

# 2. the headless environment (CellProfiler 5 + rls_core), if not there yet
if ! "$VENV/bin/python" -c "import cellprofiler, rls_core" 2>/dev/null; then
  say "running scripts/install.sh first"
  VENV="$VENV" bash scripts/install.sh
fi

# 3. wx for the GUI's Python
abi() { "$1" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"; }
if [ "$(abi "$VENV/bin/python")" = "$(abi $SYS_PY)" ]; then
  GUI_PY="$VENV/bin/python"
  GUI_PATH="$ROOT/$VENV/gui-path"
  mkdir -p "$GUI_PATH"
  if [ "$(readlink "$GUI_PATH/wx" 2>/dev/null)" != "$SYS_WX" ]; then
    ln -sfn "$SYS_WX" "$GUI_PATH/wx"
    say "linked $GUI_PATH/wx -> $SYS_WX (same ABI: $(abi $SYS_PY))"
  else
    say "wx link already in $GUI_PATH"
  fi
else
  say "$VENV's Python ($(abi "$VENV/bin/python")) cannot load Debian's wx ($(abi $SYS_PY)):" \
      "using a separate $GUI_VENV from $SYS_PY with system site packages"
  if [ ! -x "$GUI_VENV/bin/python" ]; then
    $SYS_PY -m venv --system-site-packages "$GUI_VENV"
  fi
  VENV="$GUI_VENV" bash scripts/install.sh
  GUI_PY="$GUI_VENV/bin/python"
  GUI_PATH=""
fi

# 4. appose (imported by CellProfiler 5's plugin dialog, not declared as a dependency)
if "$GUI_PY" -c "import appose" 2>/dev/null; then
  say "appose already installed"
else
  say "pip install appose"
  "$GUI_PY" -m pip install -q appose 2>&1 | filter
fi

# 5. check: wx imports in the GUI's Python and the float shim is active
PYTHONPATH="${GUI_PATH:+$GUI_PATH:}$ROOT/gui" "$GUI_PY" - <<'EOF'
import wx, wx.html, wx.lib.agw.aui  # noqa: F401  (what the CellProfiler GUI uses)
import appose, cellprofiler  # noqa: F401
shim = getattr(wx, "_superresolverls_float_shim", False)
assert not shim or wx.Size(1.6, 2) == wx.Size(2, 2)
print("[install_gui] wxPython %s imports; float shim %s" % (
    wx.__version__, "active" if shim else "not needed (wxPython != 4.2.0)"))
EOF
say "done. Start the GUI:      gui/cellprofiler_gui.sh pipelines/translocation.cppipe"
say "     run the GUI tests:   $VENV/bin/python -m pytest -m gui tests/gui -q   (screenshots: tests/gui/artifacts/)"
