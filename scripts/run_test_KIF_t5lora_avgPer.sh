#!/usr/bin/env bash
# OP of every order: predictions of the final adapter on every task's test split, then eval_avgPerf.
# Finished prediction files are skipped and a half-written one is continued.
#
#   BASE_MODEL=/models/t5-large GPU=0 ./scripts/run_test_KIF_t5lora_avgPer.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required; BATCH_SIZE is the
# generation batch). Extra arguments go to the generators.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
test_grid avgPerf src/generate_avgPerf_t5lora.py -- "$@"
