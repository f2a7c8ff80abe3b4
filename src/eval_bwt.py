"""BWT of an order: mean over every task but the last of (a_Ti - a_ii).

    python src/eval_bwt.py --base_model PATH --dataset_id 4 [--method_name RKIF]
    python src/eval_bwt.py --base_model PATH --dataset_id 4 --matrix   # R[t][i]: OP, BWT, forgetting, heatmap

a_ii comes from the bwt predictions, a_Ti from the avgPerf ones (--pred_dir / --avgperf_dir point
elsewhere, e.g. at old runs in the released format). Prints a per-task table; writes metrics.json
and metrics.csv (and accuracy_matrix.png with --matrix) beside the predictions.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.cli import evaluate  # noqa: E402
from rkif.flags import run  # noqa: E402


def eval_bwt(base_model: str = "", dataset_id=4, method_name: str = "RKIF", data_dir: str = "data/long_sequence",
         output_path: str = "output", pred_dir: str = None, avgperf_dir: str = None, matrix: bool = False):
    evaluate("matrix" if matrix else "bwt", base_model=base_model, dataset_id=dataset_id,
                        method_name=method_name, data_dir=data_dir, output_path=output_path, pred_dir=pred_dir,
                        avgperf_dir=avgperf_dir)


def main(argv=None):
    run(eval_bwt, argv)


if __name__ == "__main__":
    main()
