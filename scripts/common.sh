# Sourced by the run_*.sh scripts: the environment they share, checked up front.
#   BASE_MODEL   (required) local folder or model id, e.g. /models/t5-large, /models/Llama-2-7b-chat-hf
#   GPU          (required) CUDA device index, e.g. 0, or "cpu"
#   DATA_DIR     data folder
#   OUTPUT_PATH  adapters and predictions
#   METHOD       RKIF, SeqLoRA, Replay, OLoRA, IncLoRA, EWC or MTL
#   SEED         another seed trains and scores into its own folders (suffix _seed{n})
#   RECIPE       rkif or olora: the training protocol (src/rkif/recipes.py); a recipe other than the
#                default has its own folders (suffix _recipe-{name})
#                (these five, where unset, take the declared defaults: docs/flags.md)
#   DATASET_IDS  orders to run (default "4 5 6 1 2 3"); an order may be a JSON file of task names
#   PYTHON       interpreter (default .venv/bin/python if present, else python)
#   BATCH_SIZE   generation batch of the test scripts (default 32)
#   RESUME       1 (default): an unfinished task resumes from its newest complete checkpoint;
#                0: it restarts at step 0 (its old checkpoints are removed)
# Relative paths are taken from the repository root (the scripts run there).
: "${BASE_MODEL:?set BASE_MODEL to the base model folder or id, e.g. BASE_MODEL=/models/t5-large}"
: "${GPU:?set GPU to the CUDA device index to use (e.g. GPU=0), or GPU=cpu}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
if ! "$PYTHON" -c "import rkif" 2>/dev/null; then
  echo "error: the rkif package is not installed for $PYTHON: run make install (or $PYTHON -m pip install -e .)" >&2
  exit 2
fi
# DATA_DIR, OUTPUT_PATH, METHOD, SEED, RECIPE: the declared defaults where unset (src/rkif/settings.py)
defaults=$("$PYTHON" -m rkif.run_folders shell-defaults) || exit 2
eval "$defaults"
DATASET_IDS=${DATASET_IDS:-"4 5 6 1 2 3"}
BATCH_SIZE=${BATCH_SIZE:-32}  # the test grids' generation batch, for both backbones (as the grids always ran)
RESUME=${RESUME:-1}
case "$RESUME" in 0|1) ;; *) echo "error: RESUME must be 0 or 1, got '$RESUME'" >&2; exit 2 ;; esac
if [ "$GPU" = cpu ]; then export CUDA_VISIBLE_DEVICES=""; else export CUDA_VISIBLE_DEVICES="$GPU"; fi

# train_grid BACKBONE FLAG...: every task of every order in $DATASET_IDS, in sequence, through the
# pipeline (src/run_pipeline.py --train_only): tasks with an adapter are skipped, an unfinished one
# resumes from its newest complete checkpoint (RESUME=1), the first failure stops the grid. FLAGs go
# to the training script (finetune_KIF_t5lora.py or finetune_KIF_llama.py), --precision included.
train_grid() {
  local backbone=$1
  shift
  local dataset_id resume=()
  [ "$RESUME" = 0 ] && resume=(--no_resume)
  for dataset_id in $DATASET_IDS; do
    "$PYTHON" src/run_pipeline.py --train_only --backbone "$backbone" --methods "$METHOD" \
      --base_model "$BASE_MODEL" --data_dir "$DATA_DIR" --output_path "$OUTPUT_PATH" --dataset_id "$dataset_id" \
      --seed "$SEED" --recipe "$RECIPE" "${resume[@]}" "$@"
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
      "$PYTHON" "$g" "${flags[@]}" --gen_batch_size "$BATCH_SIZE" "$@"
    done
    "$PYTHON" "src/eval_$kind.py" "${flags[@]}"
  done
}
