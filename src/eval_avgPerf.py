"""OP of an order: mean test accuracy over all tasks of the adapter after the last task.

    python src/eval_avgPerf.py --base_model PATH --dataset_id 4 [--method_name RKIF]
    python src/eval_avgPerf.py --dataset_id 4 --model_name t5-largelora --method_name RKIF   # as released
    python src/eval_avgPerf.py --dataset_id 4 --pred_dir SOME_RUN_avgPerf/

Reads {output_path}/{model}lora_{method}_dataset_id_{id}_avgPerf/ (--model_name gives the whole
{model}lora prefix, as the released script does; --pred_dir any folder). Files may be ours
({i}-{task}.jsonl) or the released generators' ({i}-{task}_result.txt, scored with the released
rule). Prints a per-task table; writes metrics.json and metrics.csv beside the predictions.
Every prediction file must cover exactly the test split's ids.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.cli import evaluate  # noqa: E402
from rkif.flags import run  # noqa: E402


def eval_avgperf(base_model: str = "", dataset_id=4, method_name: str = "RKIF", model_name: str = None,
                 data_dir: str = "data/long_sequence", output_path: str = "output", pred_dir: str = None,
                 seed: int = 42, recipe: str = "rkif"):
    evaluate("avgPerf", base_model=base_model, dataset_id=dataset_id, method_name=method_name,
             model_name=model_name, data_dir=data_dir, output_path=output_path, pred_dir=pred_dir, seed=seed,
             recipe=recipe)


def main(argv=None):
    run(eval_avgperf, argv)


if __name__ == "__main__":
    main()
