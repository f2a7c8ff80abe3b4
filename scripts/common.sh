# Sourced by the run_*.sh scripts: the environment they share, checked up front.
#   BASE_MODEL   (required) local folder or model id, e.g. /models/t5-large, /models/Llama-2-7b-chat-hf
#   GPU          (required) CUDA device index, e.g. 0, or "cpu"
#   DATA_DIR     data folder (default data/long_sequence)
#   OUTPUT_PATH  adapters and predictions (default output)
#   METHOD       RKIF (default), SeqLoRA, Replay, OLoRA, IncLoRA, EWC or MTL
#   SEED         42 (default); another seed trains and scores into its own folders (suffix _seed{n})
#   RECIPE       rkif (default) or olora: the training protocol (src/rkif/recipes.py); flags given to the
#                script still win; a recipe other than rkif has its own folders (suffix _recipe-{name})
#   DATASET_IDS  orders to run (default "4 5 6 1 2 3"); an order may be a JSON file of task names
#   PYTHON       interpreter (default .venv/bin/python if present, else python)
#   BATCH_SIZE   generation batch of the test scripts (default 32)
#   RESUME       1 (default): an unfinished task resumes from its newest complete checkpoint;
#                0: it restarts at step 0 (its old checkpoints are removed)
# Relative paths are taken from the repository root (the scripts run there).
: "${BASE_MODEL:?set BASE_MODEL to the base model folder or id, e.g. BASE_MODEL=/models/t5-large}"
: "${GPU:?set GPU to the CUDA device index to use (e.g. GPU=0), or GPU=cpu}"
DATA_DIR=${DATA_DIR:-data/long_sequence}
OUTPUT_PATH=${OUTPUT_PATH:-output}
METHOD=${METHOD:-RKIF}
DATASET_IDS=${DATASET_IDS:-"4 5 6 1 2 3"}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
BATCH_SIZE=${BATCH_SIZE:-32}  # generation batch of the test scripts
RESUME=${RESUME:-1}
SEED=${SEED:-42}
RECIPE=${RECIPE:-rkif}
case "$RECIPE" in rkif|olora) ;; *) echo "error: RECIPE must be rkif or olora, got '$RECIPE'" >&2; exit 2 ;; esac
case "$SEED" in ''|*[!0-9]*) echo "error: SEED must be a non-negative integer, got '$SEED'" >&2; exit 2 ;; esac
RUN_SUFFIX=""
[ "$RECIPE" != rkif ] && RUN_SUFFIX="_recipe-$RECIPE"
[ "$SEED" -ne 42 ] && RUN_SUFFIX="${RUN_SUFFIX}_seed$SEED"
case "$RESUME" in 0|1) ;; *) echo "error: RESUME must be 0 or 1, got '$RESUME'" >&2; exit 2 ;; esac
if [ "$GPU" = cpu ]; then export CUDA_VISIBLE_DEVICES=""; else export CUDA_VISIBLE_DEVICES="$GPU"; fi

# train_grid SCRIPT FLAG...: every task of every order in $DATASET_IDS, in sequence, with SCRIPT
# (a finetune_*.py); tasks whose adapter_model.bin exists are skipped, an unfinished one resumes
# from its newest complete checkpoint (RESUME=1), the first failure stops.
train_grid() {
  local script=$1
  shift
  local model_name dataset_id tasks order_name task_id task out resume=()
  [ "$RESUME" = 1 ] && resume=(--resume_from_checkpoint auto)
  model_name=$(basename "${BASE_MODEL%/}")
  for dataset_id in $DATASET_IDS; do
    tasks=$(PYTHONPATH=src "$PYTHON" -m rkif.tasks "$dataset_id")
    order_name=$(PYTHONPATH=src "$PYTHON" -m rkif.tasks --name "$dataset_id")
    task_id=0
    for task in $tasks; do
      out="$OUTPUT_PATH/${model_name}lora_${METHOD}_dataset_id_${order_name}${RUN_SUFFIX}/${task_id}-${task}"
      if [ -f "$out/adapter_model.bin" ]; then
        echo "skip: order $dataset_id task $task_id-$task (adapter exists at $out)"
      else
        echo "train: order $dataset_id task $task_id-$task"
        "$PYTHON" "$script" --method_name "$METHOD" --base_model "$BASE_MODEL" --data_dir "$DATA_DIR" \
          --output_path "$OUTPUT_PATH" --dataset_id "$dataset_id" --task_id "$task_id" --seed "$SEED" \
          --recipe "$RECIPE" \
          "${resume[@]}" "$@"
      fi
      task_id=$((task_id + 1))
    done
  done
  echo "done: all tasks of orders $DATASET_IDS have adapters under $OUTPUT_PATH"
}

# test_grid KIND GENERATOR...: for every order, each GENERATOR (a generate_*.py) then src/eval_KIND.py.
test_grid() {
  local kind=$1
  shift
  local generators=() dataset_id flags g
  while [ $# -gt 0 ] && [ "$1" != -- ]; do generators+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  for dataset_id in $DATASET_IDS; do
    flags=(--base_model "$BASE_MODEL" --dataset_id "$dataset_id" --method_name "$METHOD"
           --data_dir "$DATA_DIR" --output_path "$OUTPUT_PATH" --seed "$SEED" --recipe "$RECIPE")
    for g in "${generators[@]}"; do
      "$PYTHON" "$g" "${flags[@]}" --batch_size "$BATCH_SIZE" "$@"
    done
    "$PYTHON" "src/eval_$kind.py" "${flags[@]}"
  done
}
