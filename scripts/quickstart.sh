#!/usr/bin/env bash
# Quick start: install everything into ./.venv, then run the main job: the shared
# translocation pipeline on the LR examples with the shipped default model, the HR
# reference pipeline, and a per-condition summary with a plot (see scripts/main_job.sh).
# Pass "golgi" to run the Golgi assay instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/main_job.sh "${1:-translocation}"
