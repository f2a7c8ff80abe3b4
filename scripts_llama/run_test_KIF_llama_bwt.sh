#!/usr/bin/env bash
# LLaMA BWT of every order: each task's predictions with the adapter saved right after it (and, if
# missing, the final adapter's predictions, which BWT compares them with), then eval_bwt.
#
#   BASE_MODEL=/models/Llama-2-7b-chat-hf GPU=0 ./scripts_llama/run_test_KIF_llama_bwt.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required; BATCH_SIZE is the
# generation batch). Extra arguments go to the generators.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
test_grid bwt src/generate_avgPerf_llama.py src/generate_bwt_llama.py -- "$@"
