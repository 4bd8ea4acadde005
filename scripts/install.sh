#!/usr/bin/env bash
# Install SuperResolveRLS and everything it needs into ./.venv (idempotent, ~3 min cold).
#
# Why each step is the way it is (details in docs/install.md):
# - torch==2.13.0 is pinned so pip takes the local CPU wheel; a bare "torch" pulls a
#   multi-GB CUDA build. On a GPU machine install your CUDA build of torch first.
# - CellProfiler 5 (nightly) is the line that installs on Python 3.11. Its wheel is
#   installed with --no-deps to skip wxPython (no Linux wheels on PyPI) and mysqlclient;
#   its real dependencies are listed explicitly below.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
CP_VERSION=5.0.0.dev784

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
# pip warns about the machine's local index folders for every package: keep the log readable
filter() { grep -v "is ignored: it is neither a file nor a directory" || true; }
stamp="$VENV/.rls-install-stamp"
want="$(cat setup.cfg scripts/install.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[install] environment up to date ($VENV)"
  exit 0
fi

$PIP install -q --upgrade "pip>=23" wheel 2>&1 | filter
{ $PIP install -q "torch==2.13.0" || $PIP install -q "torch>=2.1,<2.15"; } 2>&1 | filter
if ! $VENV/bin/python -c "import cellprofiler, cellprofiler_core" 2>/dev/null; then
  echo "[install] CellProfiler $CP_VERSION (headless)"
  $PIP install -q --no-deps "cellprofiler-nightly==$CP_VERSION" 2>&1 | filter
  $PIP install -q "cellprofiler-library-nightly==$CP_VERSION" "cellprofiler-core-nightly==$CP_VERSION" \
    "centriole-nightly==$CP_VERSION" "boto3>=1.28.41" "docutils==0.15.2" "h5py>=3.7.0" \
    "imageio>=2.31.3" "Jinja2>=3.1.2" "joblib>=1.3.2" "mahotas>=1.4.13" "matplotlib<4,>=3.1.3" \
    "numpy<2,>=1.24.4" "Pillow>=10.0.0" "pyzmq>=22.3.0" "sentry-sdk~=2.8.0" "requests>=2.31.0" \
    "scikit-image>=0.20.0" "scipy<1.11,>=1.9.1" "scyjava>=1.9.1" "six>=1.16.0" \
    "tifffile>=2022.4.8" "rapidfuzz>=3.0.0" "packaging>=20.0" importlib_metadata 2>&1 | filter
fi
echo "[install] rls_core (editable), the Dask extra (its tests run a real cluster) and test tools"
$PIP install -q -e ".[test,dask]" 2>&1 | filter
echo "$want" > "$stamp"
echo "[install] done: activate with 'source $VENV/bin/activate'"
