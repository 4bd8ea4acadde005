#!/usr/bin/env bash
# Train an assay prior on whatever accelerator this machine has, in one call:
#
#   scripts/train_on_device.sh MODEL MINUTES OUTDIR [RESUME_DIR]
#
# MODEL       translocation | golgi
# MINUTES     training time; then the prior is fitted and the bundle written (a few minutes
#             more on CPU, well under one on a GPU)
# OUTDIR      receives at most 8 small files: MODEL.h5 (bundle, <= 12 MiB), resume.pt (slim
#             resume checkpoint), samples_final.png, train_log.csv, train.log, for a fresh
#             run reals.png (training crops), and with METRICS_EVERY metrics.csv and .png
# RESUME_DIR  optional: a folder with MODEL.h5 + resume.pt (or MODEL.pt) from an earlier run
#             (e.g. the committed training/checkpoints/; a shipped model's MODEL.h5 is taken
#             from rls_core/models/) to continue instead of starting afresh
#
# Made for the lent GPU machine (docs/models.md, "GPU"): no pip install, only what is there
# (torch, numpy 1 or 2, scipy, h5py, scikit-image, tifffile, tqdm), run from the repository
# with PYTHONPATH=. ; nothing is downloaded. The training data is simulated on the spot from the
# documented seeds (translocation 3000, golgi 4000; 200 fields per condition, 512 px), the same
# data the CPU campaign trains on. The full checkpoint (~100 MB) stays in WORKDIR.
# Knobs (environment): FIELDS (200), SIM_WORKERS (all cores: processes simulating the data), PRESET (standard), BATCH (16), PRIOR_SAMPLES (100000),
# FLOW_EPOCHS (20), WORKDIR (/tmp/rls-device), PYTHON (python3), DEVICE (auto), ACCEL (none;
# bf16 = bfloat16 autocast of the main passes, see benchmarks/bf16_training.py before using it),
# EXPORT (ema; raw = the bundle holds G itself, as the CPU campaign's since chunk 5: docs/models.md;
# best = the best measured generator, needs METRICS_EVERY), METRICS_EVERY (0 = off; K = measure the
# realism of G and its EMA every K iterations, `rls train --metrics-every`).
set -euo pipefail
usage() { sed -n '2,15p' "$0"; exit 2; }
[ $# -ge 3 ] || usage
MODEL=$1; MINUTES=$2; OUTDIR=$3; RESUME_DIR=${4:-}
case "$MODEL" in
  translocation) SEED=3000; CHANNELS=DNA,NFkB ;;
  golgi) SEED=4000; CHANNELS=DNA,Golgi ;;
  *) echo "unknown MODEL '$MODEL' (translocation or golgi)" >&2; usage ;;
esac
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
FIELDS=${FIELDS:-200}
WORK=${WORKDIR:-/tmp/rls-device}
DATA="$WORK/data/$MODEL-s$SEED-f$FIELDS"
RUN="$WORK/runs/$MODEL"
mkdir -p "$OUTDIR" "$WORK"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/train.log"
say() { echo "[train_on_device $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

say "python: $($PY -c 'import sys, torch, numpy; print(sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))')"
if [ ! -f "$DATA/simulation.json" ]; then
  say "simulating $FIELDS fields per condition (seed $SEED) into $DATA"
  rm -rf "$DATA"
  $PY -m rls_core simulate --assay "$MODEL" --fields "$FIELDS" --seed "$SEED" --size 512 -o "$DATA" \
    --workers "${SIM_WORKERS:-$(nproc)}" --no-progress >> "$LOG" 2>&1
fi

rm -rf "$RUN"; mkdir -p "$RUN"
ARGS=(train "$DATA" -o "$RUN" --name "$MODEL" --time-limit "$MINUTES" --finish-at-limit --iters 10000000
      --device "${DEVICE:-auto}" --accel "${ACCEL:-none}" --export "${EXPORT:-ema}" --metrics-every "${METRICS_EVERY:-0}" --checkpoint-every 500 --snapshot-every 500 --log-every 10 --no-progress
      --fit-prior-samples "${PRIOR_SAMPLES:-100000}" --flow-epochs "${FLOW_EPOCHS:-20}")
if [ -n "$RESUME_DIR" ]; then
  # a run folder holds resume.pt; the repository keeps it as training/checkpoints/MODEL.pt
  CKPT="$RESUME_DIR/resume.pt"; [ -f "$CKPT" ] || CKPT="$RESUME_DIR/$MODEL.pt"
  # a shipped model's bundle lives in the package, not beside its checkpoint (docs/models.md);
  # rls train checks that checkpoint and bundle were written together
  BUNDLE="$RESUME_DIR/$MODEL.h5"; [ -f "$BUNDLE" ] || BUNDLE="rls_core/models/$MODEL.h5"
  [ -f "$CKPT" ] && [ -f "$BUNDLE" ] || {
    echo "$RESUME_DIR must hold resume.pt (or $MODEL.pt) and $MODEL.h5 (a run's slim checkpoint and its bundle)" >&2; exit 2; }
  cp "$CKPT" "$RUN/checkpoint.pt"; cp "$BUNDLE" "$RUN/$MODEL.h5"
  ARGS+=(--resume)
  say "resuming $RESUME_DIR for $MINUTES min"
else
  ARGS+=(--channels "$CHANNELS" --resolution 128 --preset "${PRESET:-standard}" --batch "${BATCH:-16}"
         --seed 0 --data-seed "$SEED")
  say "training $MODEL from scratch (preset ${PRESET:-standard}) for $MINUTES min"
fi
$PY -m rls_core "${ARGS[@]}" >> "$LOG" 2>&1

for f in "$MODEL.h5" resume.pt samples_final.png train_log.csv; do
  cp "$RUN/$f" "$OUTDIR/"
done
[ ! -f "$RUN/reals.png" ] || cp "$RUN/reals.png" "$OUTDIR/"  # written by fresh runs only
for f in metrics.csv metrics.png; do  # written with METRICS_EVERY only
  [ ! -f "$RUN/$f" ] || cp "$RUN/$f" "$OUTDIR/"
done
say "done: $(tail -n 1 "$RUN/train_log.csv" | cut -d, -f1,2) (iteration, kimg); files in $OUTDIR:"
ls -l "$OUTDIR" | tee -a "$LOG"
