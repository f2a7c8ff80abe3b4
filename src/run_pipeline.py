"""The whole job for one order: train every task, generate predictions, compute OP and BWT.

    python src/run_pipeline.py --base_model /models/t5-large --dataset_id 4 --methods RKIF,SeqLoRA,Replay
    python src/run_pipeline.py ... --matrix          # also every R[t][i]: forgetting and heatmaps

Resumable at any point: tasks whose adapter exists and prediction files that are complete
are skipped; a half-written prediction file is continued. Flags not listed here (e.g.
--num_epochs, --learning_rate, --memory_data_ratio) go to finetune_KIF_t5lora.py's train().
Writes {output_path}/summary_dataset_id_{id}.json/.csv, and with --matrix a side-by-side
heatmap {output_path}/accuracy_matrices_dataset_id_{id}.png.
"""

import functools
import inspect
import os
import sys

import fire

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from finetune_KIF_t5lora import train  # noqa: E402
from rkif.adapters import adapter_exists  # noqa: E402
from rkif.cli import evaluate, exit_on_input_error, generate_t5, matrix_title  # noqa: E402
from rkif.continual import METHODS, adapter_dir  # noqa: E402
from rkif.errors import InputError  # noqa: E402
from rkif.metrics import plot_matrices, write_report  # noqa: E402
from rkif.tasks import resolve_order  # noqa: E402


def run_order(base_model="", dataset_id=4, methods="RKIF", data_dir="data/long_sequence", output_path="output",
              matrix=False, gen_batch_size=32, max_input_length=1024, max_length=128, precision="auto",
              cache_dir=None, **train_flags):
    methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in METHODS:
            raise InputError(f"--methods: unknown method {m!r}; expected a comma-separated subset of {METHODS}")
    unknown = set(train_flags) - set(inspect.signature(train).parameters)
    if unknown:
        raise InputError(f"unknown flag(s) {sorted(unknown)}: not a pipeline flag nor one of finetune_KIF_t5lora.py's")
    order_name, tasks = resolve_order(dataset_id)
    common = dict(base_model=base_model, dataset_id=dataset_id, data_dir=data_dir, output_path=output_path)
    gen = dict(batch_size=gen_batch_size, max_input_length=max_input_length, max_length=max_length,
               precision=precision, cache_dir=cache_dir)
    summary, panels = {}, []
    for method in methods:
        for t, task in enumerate(tasks):
            if adapter_exists(adapter_dir(output_path, base_model, method, order_name, t, task)):
                print(f"skip training: {method} task {t}-{task} (adapter exists)")
                continue
            train(method_name=method, task_id=t, max_input_length=max_input_length, cache_dir=cache_dir,
                  **common, **train_flags)
        for kind in (("matrix",) if matrix else ("avgPerf", "bwt")):
            generate_t5(kind, method_name=method, **common, **gen)
        if matrix:
            result = evaluate("matrix", method_name=method, **common)
            panels.append((result["R"], matrix_title(method, result)))
        else:
            result = {**evaluate("avgPerf", method_name=method, **common),
                      **evaluate("bwt", method_name=method, **common)}
        summary[method] = result

    rows = [{"method": m, **{k: v for k, v in r.items() if k != "R"}} for m, r in summary.items()]
    prefix = os.path.join(output_path, f"summary_dataset_id_{order_name}")
    write_report(prefix, rows, {"order": " ".join(tasks), "base_model": base_model})
    if panels:
        plot_matrices(panels, tasks, os.path.join(output_path, f"accuracy_matrices_dataset_id_{order_name}.png"))
    print(f"\norder {order_name}: {' '.join(tasks)}")
    keys = [k for k in ("OP", "BWT", "forgetting") if k in rows[0]]
    print(f"{'method':10s}" + "".join(f"{k:>12s}" for k in keys))
    for r in rows:
        print(f"{r['method']:10s}" + "".join(f"{r[k]:12.4f}" for k in keys))
    print(f"written: {prefix}.json, {prefix}.csv")
    return summary


@functools.wraps(run_order)
def main(*args, **kwargs):
    exit_on_input_error(run_order, *args, **kwargs)


if __name__ == "__main__":
    fire.Fire(main)
