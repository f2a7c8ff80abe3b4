"""The real-model benchmark on a CPU: SmolLM2-135M-Instruct on the Standard CL benchmark (order 4).

    make real                                                  # installs what it needs, then runs this
    .venv-current/bin/python scripts/real_benchmark.py [--data_dir data/long_sequence] [--methods SeqLoRA,RKIF]
    .venv-current/bin/python scripts/real_benchmark.py --evaluate_on dev    # choosing settings: dev only

The body is rkif.real_model; what it runs, the settings and why, and the measured table: docs/real-model.md.
Any training flag (--num_epochs, --learning_rate, --inner_iterations, ...) overrides the benchmark's value.
"""

import functools

from rkif.cli_runner import run
from rkif.training import TRAINING_FLAGS
from rkif.real_model import REAL_FLAGS, real_benchmark


@functools.wraps(real_benchmark)
def main(*args, **kwargs):
    real_benchmark(*args, **kwargs)  # the figures are printed and written; nothing for fire to print


if __name__ == "__main__":
    run(main, extra_flags=tuple(dict.fromkeys((*REAL_FLAGS, *TRAINING_FLAGS))))
