#!/usr/bin/env bash
# The main job: super-resolve the LR example fields in CellProfiler (headless) and compare the
# biological readout with the same analysis on the HR references.
#
#   scripts/main_job.sh                 # translocation: NF-kB ratio per condition, SR vs HR
#   scripts/main_job.sh golgi           # golgi: mean Golgi spot area per condition, SR vs HR
#   scripts/main_job.sh all             # both
#
# Outputs: out/<assay>/sr/*.csv, out/<assay>/hr/*.csv, the per-condition summary on stdout and
# out/translocation/ratio_by_condition.png / out/golgi/spot_area_by_condition.png.
# Needs the shipped models rls_core/models/translocation.h5 and golgi.h5 (scripts/install.sh,
# then training). On 2 CPU cores the translocation SR run takes a few minutes.
#
# Your own images and model:
#   1. name files so the pipeline's regex matches them, e.g. myassay_DMSO_B02_s1_DNA.tif
#      (<assay>_<Condition>_<Well>_s<Site>_<Stain>.tif; one file per stain), or edit the
#      Metadata/NamesAndTypes modules in the CellProfiler GUI;
#   2. point the pipeline at your model (and factor/steps):
#        .venv/bin/python pipelines/make_pipelines.py --customize pipelines/translocation.cppipe \
#            my.cppipe --model /path/to/my_model.h5 --factor 16 --steps 500
#   3. run it:  PIPELINE=my.cppipe INPUT=/my/lr/images OUT=out/mine scripts/main_job.sh translocation
#      (HR=/my/hr/images adds the HR reference run; without HR only the SR run is made).
#
# Environment: VENV (default .venv; its bin/cellprofiler and bin/python are used),
# PIPELINE / HR_PIPELINE / INPUT / HR / OUT override the defaults for one assay.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
CP="$VENV/bin/cellprofiler"
PY="$VENV/bin/python"
[ -x "$CP" ] || { echo "error: $CP not found; run scripts/install.sh (or set VENV)" >&2; exit 1; }

# A missing plugin or model makes CellProfiler log an error yet still exit 0 in some cases:
# every run is checked by the CSV it must write.
run_cp() {  # pipeline input output expected_csv
  local pipeline=$1 input=$2 output=$3 csv=$4 log
  mkdir -p "$output"
  rm -f "$output"/*.csv
  log="$output/cellprofiler.log"
  echo "[main_job] cellprofiler -p $pipeline -i $input -o $output (log: $log)"
  local t0=$SECONDS
  if ! "$CP" -c -r -p "$pipeline" --plugins-directory plugins -i "$input" -o "$output" \
       -e imageio_reader >"$log" 2>&1; then
    echo "error: CellProfiler failed on $pipeline; last lines of $log:" >&2
    grep -E "Error|error:|SuperResolveRLS:" "$log" | tail -5 >&2 || tail -20 "$log" >&2
    exit 1
  fi
  if [ ! -s "$output/$csv" ]; then
    echo "error: $output/$csv was not written (plugin not found, or no image sets?); see $log" >&2
    grep -E "Could not find|Error|SuperResolveRLS:" "$log" | tail -5 >&2 || true
    exit 1
  fi
  echo "[main_job]   done in $((SECONDS - t0)) s"
}

run_assay() {  # assay
  local assay=$1 csv model
  case "$assay" in
    translocation) csv=Translocation_Cells.csv ;;
    golgi) csv=Golgi_Image.csv ;;
    *) echo "error: unknown assay '$assay' (translocation, golgi or all)" >&2; exit 2 ;;
  esac
  local pipeline=${PIPELINE:-pipelines/$assay.cppipe}
  local hr_pipeline=${HR_PIPELINE:-pipelines/${assay}_hr.cppipe}
  local input=${INPUT:-examples/$assay/lr}
  local hr=${HR-examples/$assay/hr}
  local out=${OUT:-out/$assay}
  if [ -z "${PIPELINE:-}" ]; then
    model=rls_core/models/$assay.h5
    [ -f "$model" ] || { echo "error: $model is missing: train the shipped model first (see README)" >&2; exit 1; }
    [ -d "$input" ] || "$PY" examples/make_examples.py --assay "$assay"
  fi
  run_cp "$pipeline" "$input" "$out/sr" "$csv"
  [ -n "$hr" ] && run_cp "$hr_pipeline" "$hr" "$out/hr" "$csv"
  "$PY" scripts/summarize.py "$assay" "$out"
}

case "${1:-translocation}" in
  all) run_assay translocation; run_assay golgi ;;
  -h|--help) sed -n '2,26p' "$0" ;;
  *) run_assay "${1:-translocation}" ;;
esac
