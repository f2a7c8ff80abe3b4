#!/usr/bin/env bash
# Training grid for LLaMA-2-LoRA with Recurrent-KIF: Standard CL orders 4-6, then Long Sequence
# orders 1-3, every task in sequence, from the same data folder as T5 ({task}.json files).
# Finished tasks are skipped; the first failure stops the grid.
#
#   BASE_MODEL=/models/Llama-2-7b-chat-hf GPU=0 ./scripts_llama/run_train_KIF_llama.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required).
# Any arguments are passed on (through src/run_pipeline.py --train_only) to finetune_KIF_llama.py (e.g. --precision fp16, --load_8bit True).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

# Only what differs from the declared defaults is passed (src/rkif/settings.py, LLaMA's in
# src/rkif/backbones.py; docs/flags.md): the released grid groups examples by length. The training
# protocol (epochs, batch 64 = 16 x 4, lr, cutoff 512, ...) is the recipe's: RECIPE=rkif (default) or olora.
train_grid llama \
  --group_by_length True \
  "$@"
