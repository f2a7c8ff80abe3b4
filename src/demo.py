"""Built-in CPU demo: a tiny T5 and a synthetic 3-task benchmark, trained with RKIF, SeqLoRA and Replay.

    .venv/bin/python src/demo.py            # (what `make demo` runs)

Everything is made here, seeded, with no downloads: the benchmark (same file format as the
real one) under output/demo/data, the model under output/demo/tiny_t5, adapters under
output/demo/adapters. Finished tasks are skipped when it is run again.
"""

import json
import os
import sys

import fire

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from finetune_KIF_t5lora import train  # noqa: E402
from rkif.adapters import adapter_exists  # noqa: E402
from rkif.continual import adapter_dir  # noqa: E402
from rkif.synthetic import write_synthetic_benchmark  # noqa: E402
from rkif.tiny import build_tiny_t5, corpus_from_data_dir  # noqa: E402

METHODS = ("RKIF", "SeqLoRA", "Replay")


def main(out_dir="output/demo", tasks=("weather", "sport", "food"), n_train=200, num_epochs=3,
         methods=METHODS, seed=0):
    data = os.path.join(out_dir, "data")
    order = os.path.join(data, "demo_order.json")
    if not os.path.isfile(order):
        write_synthetic_benchmark(data, tasks, n_train=n_train, n_dev=50, n_test=100, seed=seed)
        with open(order, "w") as f:
            json.dump(list(tasks), f)
    model = os.path.join(out_dir, "tiny_t5")
    if not os.path.isfile(os.path.join(model, "config.json")):
        build_tiny_t5(model, corpus_from_data_dir(data), seed=seed)
    adapters = os.path.join(out_dir, "adapters")

    rows = []
    for method in methods:
        for t, task in enumerate(tasks):
            d = adapter_dir(adapters, model, method, "demo_order", t, task)
            if adapter_exists(d):
                print(f"skip: {method} task {t}-{task} (adapter exists)")
            else:
                train(method_name=method, base_model=model, data_dir=data, dataset_id=order, task_id=t,
                      output_path=adapters, num_epochs=num_epochs, learning_rate=1e-3, warmup_steps=10,
                      eval_steps=25, logging_steps=25, memory_data_ratio=5)
            with open(os.path.join(d, "run_info.json")) as f:
                info = json.load(f)
            rows.append((method, f"{t}-{task}", info["global_steps"], info["train_metrics"]["train_loss"],
                         info["best_eval_loss"], info["kif"]["fusions"], info["kif"]["outer_steps"]))

    print(f"\n{'method':8s} {'task':12s} {'steps':>6s} {'train loss':>11s} {'best eval':>10s} "
          f"{'fusions':>8s} {'outer':>6s}")
    for m, task, steps, loss, best, fusions, outer in rows:
        print(f"{m:8s} {task:12s} {steps:6d} {loss:11.4f} {best:10.4f} {fusions:8d} {outer:6d}")
    print(f"\nadapters under {adapters}")


if __name__ == "__main__":
    fire.Fire(main)
