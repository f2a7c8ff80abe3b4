"""OP predictions: the adapter after the last task of an order on every task's test split.

    python src/generate_avgPerf_t5lora.py --base_model PATH --dataset_id 4 [--method_name RKIF]

Writes {output_path}/{model}lora_{method}_dataset_id_{id}_avgPerf/{i}-{task}.jsonl (id, gold, pred),
resuming an interrupted file and skipping finished ones. Then: python src/eval_avgPerf.py (same flags).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.cli import generate_t5  # noqa: E402
from rkif.flags import run  # noqa: E402


def generate_avgperf(base_model: str = "", dataset_id=4, method_name: str = "RKIF",
                     data_dir: str = "data/long_sequence", output_path: str = "output",
                     batch_size: int = 32, max_input_length: int = None, max_length: int = 128,
                     precision: str = "auto", cache_dir: str = None, seed: int = 42, recipe: str = "rkif",
                     truncate_inputs: bool = False):
    """precision: auto (GPU: bf16 base with the LoRA branch unmerged in fp32; CPU: fp32, merged), fp32, bf16, fp16,
    bf16_merged, released (T5: the released generator's bf16 load, unmerged, then model.half()); see rkif/numerics.py.
    truncate_inputs: cut inputs at the training cutoff (default: fed whole, as the released generators)."""
    generate_t5("avgPerf", **locals())


def main(argv=None):
    run(generate_avgperf, argv)


if __name__ == "__main__":
    main()
