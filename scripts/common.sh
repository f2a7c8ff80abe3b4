# Sourced by the run_*.sh scripts: the environment they share, checked up front.
#   BASE_MODEL   (required) local folder or model id, e.g. /models/t5-large, /models/flan-t5-xl
#   GPU          (required) CUDA device index, e.g. 0, or "cpu"
#   DATA_DIR     data folder (default data/long_sequence)
#   OUTPUT_PATH  adapters and predictions (default output)
#   METHOD       RKIF (default), SeqLoRA or Replay
#   DATASET_IDS  orders to run (default "4 5 6 1 2 3"); an order may be a JSON file of task names
#   PYTHON       interpreter (default .venv/bin/python if present, else python)
: "${BASE_MODEL:?set BASE_MODEL to the T5 model folder or id, e.g. BASE_MODEL=/models/t5-large}"
: "${GPU:?set GPU to the CUDA device index to use (e.g. GPU=0), or GPU=cpu}"
DATA_DIR=${DATA_DIR:-data/long_sequence}
OUTPUT_PATH=${OUTPUT_PATH:-output}
METHOD=${METHOD:-RKIF}
DATASET_IDS=${DATASET_IDS:-"4 5 6 1 2 3"}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
if [ "$GPU" = cpu ]; then export CUDA_VISIBLE_DEVICES=""; else export CUDA_VISIBLE_DEVICES="$GPU"; fi
