#!/usr/bin/env bash
# Released training grid for T5-LoRA with Recurrent-KIF: Standard CL orders 4-6, then
# Long Sequence orders 1-3, every task in sequence. Tasks whose adapter already exists
# are skipped, so an interrupted grid resumes where it stopped; the first failure stops it.
#
#   BASE_MODEL=/models/t5-large GPU=0 ./scripts/run_train_KIF_t5lora.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required).
# Any arguments are passed on (through src/run_pipeline.py --train_only) to finetune_KIF_t5lora.py (e.g. --num_epochs 1).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/common.sh

# Every setting takes its declared default (src/rkif/settings.py; docs/flags.md): the released grid's
# Recurrent-KIF values (K 8, M 4, outer batch 8, quantile, betas, memory 2%) are those defaults, and the
# training protocol (epochs, batch, lr, ...) is the recipe's: RECIPE=rkif (default) or olora.
train_grid t5 "$@"
