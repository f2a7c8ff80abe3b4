"""BWT predictions: the adapter saved after task i on task i's test split, for every i (or one).

    python src/generate_bwt_t5lora.py --base_model PATH --dataset_id 4 [--method_name RKIF] [--service_begin_id I]
    python src/generate_bwt_t5lora.py --base_model PATH --dataset_id 4 --matrix    # every R[t][i], i <= t

Writes {output_path}/{model}lora_{method}_dataset_id_{id}_bwt/{i}-{task}.jsonl (id, gold, pred), or with
--matrix ..._matrix/after_{t}/{i}-{task}.jsonl, resuming an interrupted file and skipping finished ones.
Then: python src/eval_bwt.py (same flags; it also reads the avgPerf predictions).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.cli import generate_t5  # noqa: E402
from rkif.flags import run  # noqa: E402


def generate_bwt(base_model: str = "", dataset_id=4, method_name: str = "RKIF",
                 data_dir: str = "data/long_sequence", output_path: str = "output",
                 batch_size: int = 32, max_input_length: int = None, max_length: int = 128,
                 precision: str = "auto", cache_dir: str = None, service_begin_id: int = -1, matrix: bool = False,
                 seed: int = 42, recipe: str = "rkif", truncate_inputs: bool = False):
    """precision: auto (GPU: bf16 base with the LoRA branch unmerged in fp32; CPU: fp32, merged), fp32, bf16, fp16,
    bf16_merged, released (T5: the released generator's bf16 load, unmerged, then model.half()); see rkif/numerics.py.
    truncate_inputs: cut inputs at the training cutoff (default: fed whole, as the released generators).
    service_begin_id: only task i (-1: all). matrix: the adapter after every task t on every task i <= t."""
    flags = {k: v for k, v in locals().items() if k != "matrix"}
    generate_t5("matrix" if matrix else "bwt", **flags)


def main(argv=None):
    run(generate_bwt, argv)


if __name__ == "__main__":
    main()
