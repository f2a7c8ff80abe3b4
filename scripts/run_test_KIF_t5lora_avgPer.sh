#!/usr/bin/env bash
# OP of every order: predictions of the final adapter on every task's test split, then eval_avgPerf.
# Finished prediction files are skipped and a half-written one is continued.
#
#   BASE_MODEL=/models/t5-large GPU=0 ./scripts/run_test_KIF_t5lora_avgPer.sh
#
# Environment: see scripts/common.sh (BASE_MODEL and GPU are required); BATCH_SIZE is the
# generation batch (default 32). Extra arguments go to the generators.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
BATCH_SIZE=${BATCH_SIZE:-32}

for dataset_id in $DATASET_IDS; do
  flags=(--base_model "$BASE_MODEL" --dataset_id "$dataset_id" --method_name "$METHOD"
         --data_dir "$DATA_DIR" --output_path "$OUTPUT_PATH")
  "$PYTHON" src/generate_avgPerf_t5lora.py "${flags[@]}" --batch_size "$BATCH_SIZE" "$@"
  "$PYTHON" src/eval_avgPerf.py "${flags[@]}"
done
