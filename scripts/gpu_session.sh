#!/usr/bin/env bash
# Everything a lent GPU machine should do, in one call that ends by a deadline:
#
#   OUT=/path/to/results scripts/gpu_session.sh [DEADLINE_S]
#
# 1. simulates both training sets on the CPU, in the background, from the documented seeds
#    (scripts/train_on_device.sh's data: translocation 3000, golgi 4000, 200 fields per condition);
# 2. meanwhile on the GPU: the CUDA parametrisations of the tests, benchmarks/generator_speed.py
#    (float32 and bf16), and `rls super-resolve` of a 1008 x 1008 HR field at 16x with default
#    steps, timed (issue: under 2 minutes on one GPU);
# 3. continues both campaign models in parallel on the one GPU (scripts/train_on_device.sh,
#    resuming training/checkpoints/: translocation.pt + .h5, golgi.pt + the shipped golgi.h5),
#    for whatever time is left before DEADLINE_S (default 540 s after the start) minus
#    FINISH_S (default 120 s) for fitting the prior and writing the bundles.
# OUT receives at most 8 files (the device tool's limit): MODEL.h5 and MODEL.pt per model and
# gpu_session.tar.gz with every log, CSV, JSON and image. Knobs (environment): METRICS_EVERY
# (1000), EXPORT (best), CHECKS_UNTIL (120 s: the checks of step 2 stop there), FIELDS (200),
# MODELS ("translocation golgi"), SKIP_CHECKS (set: train only), SR_SIZE (1008), DEV (cuda; cpu
# for a dry run). What its first run measured: docs/performance.md and docs/models.md, "GPU".
# translocation.pt left the tree for the size budget; restore it first with
#   git show a6d2cfd:training/checkpoints/translocation.pt > training/checkpoints/translocation.pt
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
DEADLINE=${1:-540}
FINISH_S=${FINISH_S:-120}
OUT=${OUT:?set OUT to the results folder}
PY=${PYTHON:-python3}
FIELDS=${FIELDS:-200}
MODELS=${MODELS:-translocation golgi}
DEV=${DEV:-cuda}  # cpu: a dry run of the whole script on a machine without a GPU
WORK=${WORKDIR:-/tmp/rls-device}
LOGS="$WORK/logs"
mkdir -p "$OUT" "$LOGS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
say() { echo "[gpu_session +$((SECONDS - T0))s] $*" | tee -a "$LOGS/session.log"; }
seed_of() { case "$1" in translocation) echo 3000 ;; golgi) echo 4000 ;; esac; }

for m in $MODELS; do
  [ -f "training/checkpoints/$m.pt" ] || { echo "training/checkpoints/$m.pt is missing (see the header of $0)" >&2; exit 2; }
done
say "start; deadline ${DEADLINE}s; $(nproc) cores"
(nvidia-smi || true) > "$LOGS/nvidia-smi.txt" 2>&1

# 1. training data, on the CPU, while the GPU runs the checks
declare -A SIM
W=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))  # worker processes per assay: the two share the cores
for m in $MODELS; do
  d="$WORK/data/$m-s$(seed_of "$m")-f$FIELDS"
  ( $PY -m rls_core simulate --assay "$m" --fields "$FIELDS" --seed "$(seed_of "$m")" --size 512 -o "$d" \
      --workers "$W" --no-progress > "$LOGS/simulate_$m.log" 2>&1 && say "simulated $m" ) &
  SIM[$m]=$!
done

# 2. GPU checks
CHECKS_UNTIL=${CHECKS_UNTIL:-120}  # the checks stop here, to leave the rest to training
check() {  # name command...: runs while the checks' time lasts, at most until CHECKS_UNTIL
  local name=$1 left=$((CHECKS_UNTIL - (SECONDS - T0))) t=$SECONDS rc; shift
  if [ "$left" -lt 15 ]; then say "$name: skipped (checks' time is up)"; return; fi
  timeout "$left" "$@" >> "$LOGS/$name.log" 2>&1; rc=$?
  say "$name: rc $rc in $((SECONDS - t)) s"
}
if [ -z "${SKIP_CHECKS:-}" ]; then
  # in order of importance: the CUDA paths, the issue's timing, then the speed figures
  check pytest_cuda $PY -m pytest -q -p no:cacheprovider -k cuda tests/test_accel.py tests/test_reconstruct.py
  SR="$WORK/sr"; SZ=${SR_SIZE:-1008}
  check super_resolve $PY -m rls_core simulate --assay translocation --condition TNFa --fields 1 --seed 9100 \
    --size "$SZ" -o "$SR/hr" --no-progress
  check super_resolve $PY -c "import sys; sys.path.insert(0, 'examples'); from make_examples import downscale_folder; \
from pathlib import Path; downscale_folder(Path('$SR/hr'), Path('$SR/lr'), 16)"
  check super_resolve_auto $PY -m rls_core super-resolve "$SR"/lr/*_DNA.tif "$SR"/lr/*_NFkB.tif -o "$SR/out_auto" \
    --factor 16 --device "$DEV" --accel auto -q
  cp "$SR/out_auto/summary.csv" "$LOGS/super_resolve_summary.csv" 2>/dev/null
  for acc in none bf16; do
    check "generator_speed_$acc" $PY benchmarks/generator_speed.py --device "$DEV" --accel "$acc" \
      --batches 1 32 64 256 --json "$LOGS/generator_speed_$acc.json"
  done
  check super_resolve_none $PY -m rls_core super-resolve "$SR"/lr/*_DNA.tif "$SR"/lr/*_NFkB.tif -o "$SR/out_none" \
    --factor 16 --device "$DEV" --accel none -q
fi

# 3. training, both models side by side, until the deadline
for m in $MODELS; do wait "${SIM[$m]}" || { say "simulating $m failed"; tail -5 "$LOGS/simulate_$m.log"; }; done
LEFT=$((DEADLINE - (SECONDS - T0) - FINISH_S))
MIN=$(awk -v s="$LEFT" 'BEGIN { printf "%.2f", (s > 30 ? s : 30) / 60 }')
say "training $MODELS for $MIN min each"
declare -A TR
for m in $MODELS; do
  METRICS_EVERY=${METRICS_EVERY:-1000} EXPORT=${EXPORT:-best} FIELDS=$FIELDS WORKDIR="$WORK" \
    bash scripts/train_on_device.sh "$m" "$MIN" "$WORK/out_$m" training/checkpoints > "$LOGS/train_on_device_$m.log" 2>&1 &
  TR[$m]=$!
done
for m in $MODELS; do
  wait "${TR[$m]}"; say "train $m rc $?"
  o="$WORK/out_$m"
  [ -f "$o/$m.h5" ] && cp "$o/$m.h5" "$OUT/"
  [ -f "$o/resume.pt" ] && cp "$o/resume.pt" "$OUT/$m.pt"
  for f in "$o"/*; do [ -f "$f" ] && case "$f" in *.h5|*.pt) ;; *) cp "$f" "$LOGS/${m}_$(basename "$f")" ;; esac; done
  tail -n 3 "$WORK/runs/$m/train_log.csv" 2>/dev/null | sed "s/^/[$m] /" | tee -a "$LOGS/session.log"
done
say "done"
tar -czf "$OUT/gpu_session.tar.gz" -C "$WORK" logs
ls -l "$OUT"
