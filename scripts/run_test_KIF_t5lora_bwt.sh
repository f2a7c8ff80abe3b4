#!/usr/bin/env bash
# BWT of every order: each task's predictions with the adapter saved right after it (and, if missing,
# the final adapter's predictions, which BWT compares them with), then eval_bwt.
# Finished prediction files are skipped and a half-written one is continued.
#
#   BASE_MODEL=/models/t5-large GPU=0 ./scripts/run_test_KIF_t5lora_bwt.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required; BATCH_SIZE is the
# generation batch). Extra arguments go to the generators.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
test_grid bwt src/generate_avgPerf_t5lora.py src/generate_bwt_t5lora.py -- "$@"
