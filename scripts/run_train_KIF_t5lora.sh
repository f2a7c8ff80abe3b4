#!/usr/bin/env bash
# Released training grid for T5-LoRA with Recurrent-KIF: Standard CL orders 4-6, then
# Long Sequence orders 1-3, every task in sequence. Tasks whose adapter already exists
# are skipped, so an interrupted grid resumes where it stopped; the first failure stops it.
#
#   BASE_MODEL=/models/t5-large GPU=0 ./scripts/run_train_KIF_t5lora.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required).
# Any arguments are passed on to finetune_KIF_t5lora.py (e.g. --num_epochs 1).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/common.sh

# The training protocol (epochs 10, batch 8 = 2 x 4 accumulation, lr 3e-4, ...) is the recipe's: RECIPE=rkif
# (default) or olora, see src/rkif/recipes.py; the Recurrent-KIF settings below are the released grid's.
train_grid src/finetune_KIF_t5lora.py \
  --inner_iterations 8 \
  --outer_iterations 4 \
  --train_batch_size_outer 8 \
  --empty_inner_score_flag 1 \
  --empty_outer_score_flag 0 \
  --quantile 0.8 \
  --beta1 0.85 \
  --beta2 0.85 \
  --memory_data_ratio 2 \
  "$@"
