#!/usr/bin/env bash
# A Python 3.9 environment, outside the clone, for running rls_core and the plugin on the Python
# that CellProfiler 4.2.8 (the stable line) runs on. See docs/cellprofiler42.md.
#
#   bash scripts/setup_py39.sh          # torch 2.8.0 + rls_core's dependencies, at CellProfiler 4.2.8.1's pins
#   bash scripts/setup_py39.sh --cp42   # ... plus CellProfiler 4.2.8.1 itself (headless: no wxPython)
#
# - The environment lives in ${RLS_PY39_CACHE:-$HOME/.cache/superresolverls/py39}/venv and is
#   reused by every clone and CI run on this machine. Each stage writes a stamp file of what it
#   installed; when the stamp matches, the stage is skipped (a warm run takes about a second).
#   Delete the folder to start over.
# - The project itself is NOT installed there: run it with PYTHONPATH=<clone root> (and
#   --plugins-directory <clone>/plugins), so that each clone runs its own code.
# - Python 3.9 is taken from $PYTHON39, else python3.9 on PATH, else pyenv's newest 3.9.x.
#   Exit status 3 means "no Python 3.9 on this machine" (the tests skip on that, and only on that);
#   any other failure exits with another non-zero status.
# - torch 2.8.0 is the newest release with Python 3.9 wheels. On Linux x86_64 PyPI has only its
#   CUDA build: it runs on the CPU but needs the nvidia-* wheels that its metadata pins (they are
#   loaded at `import torch`); triton (GPU kernels for torch.compile) is left out.
# - Versions follow CellProfiler 4.2.8.1's pins (scipy 1.9.0, scikit-image 0.18.3, h5py 3.7,
#   scikit-learn < 1, tifffile < 2022.4.22, numpy < 1.25), so that the base stage already tests
#   rls_core against exactly what it meets inside CellProfiler 4.2.
# The last line printed is `PY39_PYTHON=<path of the environment's python>`.
set -euo pipefail
cd "$(dirname "$0")/.."

CP42=0
for arg in "$@"; do
  case "$arg" in
    --cp42) CP42=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "[py39] unknown argument: $arg (use --cp42 or nothing)" >&2; exit 2 ;;
  esac
done

CACHE=${RLS_PY39_CACHE:-$HOME/.cache/superresolverls/py39}
VENV=$CACHE/venv
VPY=$VENV/bin/python

TORCH_VERSION=2.8.0
BASE_REQS=("numpy>=1.21,<1.25" "scipy==1.9.0" "scikit-image==0.18.3" "h5py==3.7.0"
           "tifffile>=2021.1,<2022.4.22" "imageio>=2.9" "tqdm>=4.60" "matplotlib>=3.3,<4"
           "scikit-learn>=0.24,<1")
CP_VERSION=4.2.8.1
JAVABRIDGE=python-javabridge==4.0.3
# cellprofiler + cellprofiler-core 4.2.8.1's requirements, less wxPython (GUI: no Linux wheel on
# PyPI for Python 3.9) and mysqlclient (ExportToDatabase's MySQL only; needs libmysqlclient-dev)
CP_REQS=("boto3>=1.12.28" "centrosome>=1.2.3,<1.3" "docutils==0.15.2" "inflect>=2.1,<7" "Jinja2>=2.11.2"
         "joblib>=0.13" "mahotas>=1.4" "matplotlib>=3.1.3,<4" "Pillow>=7.1.0" "prokaryote==2.4.4"
         "psutil>=5.7.0" "pyzmq~=22.3" "sentry-sdk==0.18.0" "requests>=2.22" "six" "future"
         "setuptools<81")

# pip warns about the machine's local index folders for every package: keep the log readable
filter() { grep -v "is ignored: it is neither a file nor a directory" || true; }
say() { echo "[py39] $*"; }
secs() { echo "$(( $(date +%s) - $1 ))s"; }

find_python39() {
  if [ -n "${PYTHON39:-}" ]; then
    [ -x "$PYTHON39" ] && { echo "$PYTHON39"; return 0; }
    say "PYTHON39=$PYTHON39 is not an executable" >&2; return 2
  fi
  if command -v python3.9 >/dev/null 2>&1 && python3.9 -c "" 2>/dev/null; then
    command -v python3.9; return 0
  fi
  local root=${PYENV_ROOT:-$HOME/.pyenv} best
  best=$(ls -d "$root"/versions/3.9.* 2>/dev/null | sort -V | tail -1)
  if [ -n "$best" ] && [ -x "$best/bin/python" ]; then
    echo "$best/bin/python"; return 0
  fi
  return 1
}

if [ -x "$VPY" ] && "$VPY" -c "import sys; assert sys.version_info[:2] == (3, 9)" 2>/dev/null; then
  PY39=$VPY
else
  rc=0; PY39=$(find_python39) || rc=$?
  if [ "$rc" = 2 ]; then
    exit 1
  elif [ "$rc" != 0 ]; then
    say "no Python 3.9 found (\$PYTHON39, python3.9 on PATH, \$PYENV_ROOT/versions/3.9.*)" >&2
    say "install one, e.g. 'pyenv install 3.9.18', or set PYTHON39=/path/to/python3.9" >&2
    exit 3
  fi
  say "creating $VENV with $("$PY39" -V 2>&1) ($PY39)"
  mkdir -p "$CACHE"
  rm -rf "$VENV"
  "$PY39" -m venv "$VENV"
fi

mkdir -p "$CACHE"
# one installer at a time per cache (two clones or CI runs on one machine)
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null; then
  flock -w 3600 9 || { say "could not lock $CACHE/.lock within an hour" >&2; exit 1; }
fi

PIP="$VPY -m pip"
hash_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# ----------------------------------------------------------------------------- base: torch + rls_core deps
base_want=$(hash_of "torch==$TORCH_VERSION" "${BASE_REQS[@]}" base-v1)
if [ "$(cat "$VENV/.stamp-base" 2>/dev/null)" = "$base_want" ]; then
  say "base stage up to date (torch $TORCH_VERSION + rls_core dependencies)"
else
  t0=$(date +%s)
  rm -f "$VENV/.stamp-base" "$VENV/.stamp-cp42"
  say "base stage: torch $TORCH_VERSION (CUDA build from PyPI, runs on the CPU) + rls_core dependencies"
  say "cold, this downloads about 3.8 GB (torch 0.89 GB + nvidia-* 2.86 GB) and takes 6.9 GB on disk;"
  say "about 2 min on a fast connection (see docs/cellprofiler42.md)"
  $PIP install -q --upgrade "pip>=23" wheel 2>&1 | filter
  $PIP install -q --no-deps "torch==$TORCH_VERSION" 2>&1 | filter
  # torch's own requirements for this platform, as its metadata pins them, less triton
  mapfile -t TORCH_REQS < <("$VPY" - <<'EOF'
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
for line in requires("torch") or []:
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    if r.name.lower() == "triton":  # GPU kernels for torch.compile: not needed on the CPU
        continue
    print(f"{r.name}{r.specifier}")
EOF
  )
  say "torch's requirements: ${#TORCH_REQS[@]} packages (${TORCH_REQS[*]})"
  $PIP install -q "torch==$TORCH_VERSION" "${TORCH_REQS[@]}" "${BASE_REQS[@]}" 2>&1 | filter
  "$VPY" -c "import torch, numpy, scipy, skimage, h5py; torch.ones(2) @ torch.ones(2)" \
    || { say "the base stage installed but 'import torch' fails: see above" >&2; exit 1; }
  echo "$base_want" > "$VENV/.stamp-base"
  say "base stage done in $(secs "$t0") ($(du -sh "$VENV" | cut -f1) in $VENV)"
fi

# ----------------------------------------------------------------------------- CellProfiler 4.2.8.1
if [ "$CP42" = 1 ]; then
  cp_want=$(hash_of "$base_want" "$CP_VERSION" "$JAVABRIDGE" "${CP_REQS[@]}" cp42-v1)
  if [ "$(cat "$VENV/.stamp-cp42" 2>/dev/null)" = "$cp_want" ]; then
    say "CellProfiler $CP_VERSION stage up to date"
  else
    t0=$(date +%s)
    rm -f "$VENV/.stamp-cp42"
    if [ -z "${JAVA_HOME:-}" ]; then
      for j in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-11-openjdk-amd64 /usr/lib/jvm/default-java; do
        [ -x "$j/bin/javac" ] && { JAVA_HOME=$j; break; }
      done
    fi
    if [ -z "${JAVA_HOME:-}" ] || [ ! -x "$JAVA_HOME/bin/javac" ]; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "no JDK found: apt-get install openjdk-17-jdk-headless (python-javabridge builds against it)"
        apt-get update -qq && apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
        JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
      else
        say "CellProfiler 4.2 needs a JDK (python-javabridge builds against it): install openjdk-17-jdk-headless or set JAVA_HOME" >&2
        exit 1
      fi
    fi
    export JAVA_HOME
    say "CellProfiler $CP_VERSION stage (JAVA_HOME=$JAVA_HOME)"
    $PIP install -q "cython<3" "${BASE_REQS[0]}" 2>&1 | filter
    say "building $JAVABRIDGE (about 30 s)"
    $PIP install -q --no-build-isolation "$JAVABRIDGE" 2>&1 | filter
    # --no-deps: the cellprofiler wheel asks for wxPython and mysqlclient (see above)
    say "pip will then say that cellprofiler requires mysqlclient and wxPython: left out on purpose (headless)"
    $PIP install -q --no-deps "python-bioformats==4.0.7" "cellprofiler-core==$CP_VERSION" \
      "cellprofiler==$CP_VERSION" 2>&1 | filter
    $PIP install -q "${CP_REQS[@]}" "torch==$TORCH_VERSION" "${BASE_REQS[@]}" 2>&1 | filter
    "$VPY" -c "import cellprofiler, cellprofiler_core, javabridge, bioformats; assert cellprofiler.__version__ == '$CP_VERSION', cellprofiler.__version__" \
      || { say "CellProfiler $CP_VERSION installed but does not import: see above" >&2; exit 1; }
    echo "$cp_want" > "$VENV/.stamp-cp42"
    say "CellProfiler $CP_VERSION stage done in $(secs "$t0") ($(du -sh "$VENV" | cut -f1) in $VENV)"
  fi
fi

echo "PY39_PYTHON=$VPY"
