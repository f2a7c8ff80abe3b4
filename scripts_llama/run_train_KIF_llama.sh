#!/usr/bin/env bash
# Training grid for LLaMA-2-LoRA with Recurrent-KIF: Standard CL orders 4-6, then Long Sequence
# orders 1-3, every task in sequence, from the same data folder as T5 ({task}.json files).
# Finished tasks are skipped; the first failure stops the grid.
#
#   BASE_MODEL=/models/Llama-2-7b-chat-hf GPU=0 ./scripts_llama/run_train_KIF_llama.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required).
# Any arguments are passed on to finetune_KIF_llama.py (e.g. --precision fp16, --load_8bit True).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

# The training protocol (epochs 10, batch 64 = 16 x 4, lr 3e-4, cutoff 512, validation 25, LoRA r 8,
# alpha 32, dropout 0.05) is the recipe's: RECIPE=rkif (default) or olora, see src/rkif/recipes.py.
train_grid src/finetune_KIF_llama.py \
  --lora_target_modules "[q_proj,v_proj]" \
  --train_on_inputs False \
  --add_eos_token True \
  --group_by_length True \
  --prompt_template_name alpaca \
  --inner_iterations 8 \
  --outer_iterations 4 \
  --train_batch_size_outer 64 \
  --empty_inner_score_flag 1 \
  --empty_outer_score_flag 0 \
  --quantile 0.8 \
  --beta1 0.85 \
  --beta2 0.85 \
  --memory_data_ratio 2 \
  "$@"
