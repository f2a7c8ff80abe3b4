"""BWT of an order: mean over every task but the last of (a_Ti - a_ii).

    python src/eval_bwt.py --base_model PATH --dataset_id 4 [--method_name RKIF]
    python src/eval_bwt.py --base_model PATH --dataset_id 4 --matrix   # R[t][i]: OP, BWT, forgetting, heatmap
    python src/eval_bwt.py --dataset_id 4 --test_data_name t5-largelora_RKIF_dataset_id_4_bwt \
        --test_data_name2 t5-largelora_RKIF_dataset_id_4_avgPerf                 # as released

a_ii comes from the bwt predictions (--test_data_name: that folder under --output_path; --pred_dir:
any folder), a_Ti from the avgPerf ones (--test_data_name2 / --avgperf_dir). --model_name names
both folders as the released scripts do ({model_name}_{method}_dataset_id_{id}_bwt/_avgPerf).
Released-format files ({i}-{task}_result.txt) are scored with the released rule. Prints a
per-task table; writes metrics.json and metrics.csv (and accuracy_matrix.png with --matrix)
beside the predictions.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.cli import evaluate  # noqa: E402
from rkif.flags import run  # noqa: E402


def eval_bwt(base_model: str = "", dataset_id=4, method_name: str = "RKIF", model_name: str = None,
             test_data_name: str = None, test_data_name2: str = None, data_dir: str = "data/long_sequence",
             output_path: str = "output", pred_dir: str = None, avgperf_dir: str = None, matrix: bool = False,
             seed: int = 42, recipe: str = "rkif"):
    """test_data_name / test_data_name2: the bwt / avgPerf folder names under output_path (released flags)."""
    pred_dir = pred_dir or (os.path.join(output_path, test_data_name) if test_data_name else None)
    avgperf_dir = avgperf_dir or (os.path.join(output_path, test_data_name2) if test_data_name2 else None)
    evaluate("matrix" if matrix else "bwt", base_model=base_model, dataset_id=dataset_id, method_name=method_name,
             model_name=model_name, data_dir=data_dir, output_path=output_path, pred_dir=pred_dir,
             avgperf_dir=avgperf_dir, seed=seed, recipe=recipe)


def main(argv=None):
    run(eval_bwt, argv)


if __name__ == "__main__":
    main()
