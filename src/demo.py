"""Built-in CPU demo: a tiny T5 and a synthetic 3-task benchmark through the whole pipeline.

    .venv/bin/python src/demo.py            # (what `make demo` runs)

Everything is made here, seeded, with no downloads: the benchmark (same file format as the
real one) under output/demo/data, a randomly initialised tiny T5 under output/demo/tiny_t5
(LoRA alone learns these tasks; no base pre-training is needed), then RKIF, SeqLoRA and
Replay each train the three tasks in sequence, predict every R[t][i], and report OP, BWT
and forgetting side by side, with the accuracy matrices as a PNG. Rerunning skips what is done.

--seed picks everything random: the benchmark, the tiny model and training (LoRA initialisation,
shuffling, memory); seed 0 lands in output/demo, seed n in output/demo_seed{n}. The recipe (micro-batch
8, 15 epochs at lr 5e-3) passes the learning check for seeds 0-9 (docs/baselines.md, "The demo over seeds").

Validation is off by default here (val_set_size=0, the last epoch's adapter is kept): with it
on, the best checkpoint by the dev loss of all tasks so far tends to stop the new task early,
which on this small benchmark leaves some tasks under 0.8 right after their own training.
"""

from rkif.commands import demo_main as main

if __name__ == "__main__":
    main()
