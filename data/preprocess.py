"""Build the benchmark files from raw task folders (offline).

    python data/preprocess.py RAW_DIR OUT_DIR [--types '{"mytask": "SC"}'] [--seed 42]

RAW_DIR holds one folder per task (possibly grouped in TYPE/ folders, e.g. SC/amazon/), each
with train.json, dev.json, test.json in either raw layout:
  (a) [{"sentence": ..., "label": ...}] plus labels.json (the option list, in order);
  (b) {"Instances": [{"input": ..., "output": ...}]} (labels.json optional).
OUT_DIR receives {split}/{task}_T5.json and {split}/{task}.json (task = lower-cased folder name),
then the folder is validated and summarised.
"""

import json
import os

from rkif.benchmark import preprocess
from rkif.cli_runner import run
from rkif.errors import InputError
from rkif.validate import summary_lines, validate_folder
from rkif.settings import RunSettings


def main(raw_dir, out_dir, types=None, seed=RunSettings.seed):
    """types: JSON object (or dict) {task folder name: TC|SC|NLI|QQP|BoolQA|MultiRC|WiC} for tasks
    outside the built-in 15."""
    if isinstance(types, str):
        try:
            types = json.loads(types)
        except json.JSONDecodeError as e:
            raise InputError(f"--types: not a JSON object ({e.msg})") from None
    if not os.path.isdir(raw_dir):
        raise InputError(f"RAW_DIR {raw_dir} is not a folder")
    counts = preprocess(raw_dir, out_dir, types, seed)
    print(f"converted {len(counts)} tasks into {out_dir}")
    print("\n".join(summary_lines(validate_folder(out_dir))))


if __name__ == "__main__":
    run(main)
