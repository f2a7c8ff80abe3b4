"""Built-in CPU demo: a tiny T5 and a synthetic 3-task benchmark through the whole pipeline.

    .venv/bin/python src/demo.py            # (what `make demo` runs; the body is rkif.demo)

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

import json
import os
import sys

from .compat import STACK, STACK_SUFFIX
from .task_files import read_json
from .errors import InputError
from .pipeline import run_order
from .run_folders import order_summary_name
from .settings import EWCSettings
from .synthetic import write_synthetic_benchmark
from .tiny import build_tiny_t5, corpus_from_data_dir


# Training and generation settings of the demo (the sweep of scripts/sweep_ewc_lambda.py uses them too).
# micro_batch_size 8: the batch of 8 in one pass (the T5 recipe's 2 x 4 accumulation takes twice as long on CPU)
DEMO_FLAGS = dict(matrix=True, gen_batch_size=50, warmup_steps=10, logging_steps=50, max_input_length=256,
                  max_length=16, micro_batch_size=8)
SHOWN = "RKIF"  # the method the demo shows: its learning check is fatal, the baselines' are reported


def prepare(out_dir, tasks=("weather", "sport", "food"), n_train=200, n_dev=50, n_test=100, d_model=64, seed=0):
    """The synthetic benchmark and the tiny T5 under out_dir, made once; returns (data, order, model).

    out_dir/demo_settings.json records what they were made with; a folder made with other settings
    is refused rather than silently reused (e.g. --seed 3 with the --out_dir of seed 0)."""
    settings = dict(tasks=list(tasks), n_train=n_train, n_dev=n_dev, n_test=n_test, d_model=d_model, seed=seed,
                    stack=STACK)
    record = os.path.join(out_dir, "demo_settings.json")
    if os.path.isfile(record):
        made = {"stack": "pinned", **read_json(record)}  # folders made before there were two stacks
        if made != settings:
            changed = sorted(k for k in settings if made.get(k) != settings[k])
            was = ", ".join(f"{k} {made.get(k)}" for k in changed)
            raise InputError(f"{record}: {out_dir} was made with other settings ({was}); give another --out_dir, "
                             "or remove the folder")
    data = os.path.join(out_dir, "data")
    order = os.path.join(data, "demo_order.json")
    if not os.path.isfile(order):
        write_synthetic_benchmark(data, tasks, n_train=n_train, n_dev=n_dev, n_test=n_test, seed=seed)
        with open(order, "w") as f:
            json.dump(list(tasks), f)
    model = os.path.join(out_dir, "tiny_t5")
    if not os.path.isfile(os.path.join(model, "config.json")):
        build_tiny_t5(model, corpus_from_data_dir(data), d_model=d_model, d_ff=2 * d_model, seed=seed)
    if not os.path.isfile(record):
        with open(record + ".tmp", "w") as f:
            json.dump(settings, f)
        os.replace(record + ".tmp", record)
    return data, order, model


def learning_check(summary, threshold=0.8):
    """{method: [R[t][t] below threshold]} for the sequential methods (MTL has no per-task adapter)."""
    return {m: [round(r["R"][t][t], 3) for t in range(len(r["R"])) if r["R"][t][t] < threshold]
            for m, r in summary.items() if "R" in r}


def demo(out_dir=None, tasks=("weather", "sport", "food"), n_train=200, n_dev=50, n_test=100,
         methods="RKIF,SeqLoRA,Replay,OLoRA,EWC,LwF,TaSL,MTL", num_epochs=15, learning_rate=5e-3, memory_data_ratio=5,
         val_set_size=0, ewc_lambda=EWCSettings.ewc_lambda, lambda_orth=0.125, d_model=64, seed=0):
    """lambda_orth: O-LoRA's 0.5 scaled by sqrt(64 / 1024): the entries of A_old A_new^T grow as
    1/sqrt(width), so on the demo's d_model 64 the same weight would be four times stronger than on
    T5-large (d_model 1024), enough to keep the third task under the learning check."""
    # the stacks' tiny models differ (tokenizers, initialisation): each has its own folders
    out_dir = out_dir or (f"output/demo{STACK_SUFFIX}" + (f"_seed{seed}" if seed else ""))
    data, order, model = prepare(out_dir, tasks, n_train, n_dev, n_test, d_model, seed)
    summary = run_order(base_model=model, dataset_id=order, methods=methods, data_dir=data,
                        output_path=os.path.join(out_dir, "runs"), num_epochs=num_epochs, learning_rate=learning_rate,
                        memory_data_ratio=memory_data_ratio, val_set_size=val_set_size, ewc_lambda=ewc_lambda,
                        lambda_orth=lambda_orth, seed=seed, **DEMO_FLAGS)
    low = {m: v for m, v in learning_check(summary).items() if v}
    # The check is that of the method the demo shows: over seeds 0-9 its lowest own-task accuracy is 0.82
    # (docs/baselines.md). A baseline may miss 0.8 for some seeds (EWC's penalty holding back the third
    # task, Replay's mixed memory): reported, not fatal.
    baselines = {m: v for m, v in low.items() if m != SHOWN}
    if baselines:
        print(f"note: baselines below 0.8 right after a task's own training: {baselines}")
    if low.get(SHOWN):
        print(f"learning check FAILED: {SHOWN}'s accuracy right after a task's own training below 0.8: {low[SHOWN]}")
        sys.exit(1)
    print(f"learning check: {SHOWN} reaches >= 0.8 accuracy right after its own training on every task")
    name = f"accuracy_matrices_{order_summary_name('demo_order', seed)}.png"
    print(f"accuracy matrices: {os.path.join(out_dir, 'runs', name)}")

