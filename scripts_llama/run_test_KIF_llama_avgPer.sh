#!/usr/bin/env bash
# LLaMA OP of every order: the final adapter's predictions on every task's test split, then eval_avgPerf.
# Finished prediction files are skipped and a half-written one is continued.
#
#   BASE_MODEL=/models/Llama-2-7b-chat-hf GPU=0 ./scripts_llama/run_test_KIF_llama_avgPer.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required; BATCH_SIZE is the
# generation batch). Extra arguments go to the generators.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
test_grid avgPerf src/generate_avgPerf_llama.py -- "$@"
