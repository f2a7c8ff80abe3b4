"""Seconds per inner optimizer step of Recurrent-KIF vs plain sequential LoRA, measured in one run.

    .venv/bin/python scripts/bench_kif_overhead.py [--repeats 5] [--max_steps 64]

Both methods train task 1 of a synthetic order from the same task-0 adapter, through the
real CLI (evaluation off, no checkpoint inside the timed region); the time is the Trainer's
own train_runtime divided by the inner optimizer steps. Runs alternate between the methods
and the median of each is compared. With K inner steps and M outer steps per cycle, an outer
step costing as much as an inner one gives a floor of (K + M) / K.
"""

import json
import os
import shutil
import statistics
import tempfile


HERE = os.path.dirname(os.path.abspath(__file__))

from rkif.commands import train_t5 as train
from rkif.synthetic import write_synthetic_benchmark
from rkif.command_line import run
from rkif.run_folders import adapter_dir
from rkif.tiny import build_tiny_t5, corpus_from_data_dir


def main(repeats=5, max_steps=64, inner_iterations=8, outer_iterations=4, d_model=128, n_train=400,
         out_json="output/bench/kif_overhead.json"):
    work = tempfile.mkdtemp(prefix="rkif_bench_")
    data = os.path.join(work, "data")
    tasks = write_synthetic_benchmark(data, ("weather", "sport"), n_train=n_train, n_dev=16, n_test=16, seed=0)
    order = os.path.join(data, "order.json")
    with open(order, "w") as f:
        json.dump(tasks, f)
    model = build_tiny_t5(os.path.join(work, "tiny_t5"), corpus_from_data_dir(data), d_model=d_model,
                          d_ff=4 * d_model, num_heads=4)
    common = dict(base_model=model, data_dir=data, dataset_id=order, num_epochs=100, max_steps=max_steps,
                  val_set_size=0, eval_steps=10**6, logging_steps=10**6, warmup_steps=5, batch_size=8,
                  micro_batch_size=2, inner_iterations=inner_iterations, outer_iterations=outer_iterations,
                  train_batch_size_outer=8, memory_data_ratio=2)
    first = os.path.join(work, "task0")
    train(method_name="SeqLoRA", task_id=0, output_path=first, **common)
    task0 = adapter_dir(first, model, "SeqLoRA", "order", 0, "weather")

    per_step = {"SeqLoRA": [], "RKIF": []}
    for r in range(repeats):
        for method in ("SeqLoRA", "RKIF"):
            out = os.path.join(work, f"{method}_{r}")
            shutil.copytree(task0, adapter_dir(out, model, method, "order", 0, "weather"))
            train(method_name=method, task_id=1, output_path=out, **common)
            with open(os.path.join(out, f"tiny_t5lora_{method}_dataset_id_order", "1-sport", "run_info.json")) as f:
                info = json.load(f)
            per_step[method].append(info["train_metrics"]["train_runtime"] / info["global_steps"])
            if method == "RKIF":
                assert info["kif"]["fusions"] == max_steps // inner_iterations, info["kif"]

    median = {m: statistics.median(v) for m, v in per_step.items()}
    ratio = median["RKIF"] / median["SeqLoRA"]
    floor = (inner_iterations + outer_iterations) / inner_iterations
    result = {"seconds_per_inner_step": per_step, "median": median, "ratio_rkif_over_seqlora": ratio,
              "floor_(K+M)/K": floor, "K": inner_iterations, "M": outer_iterations, "max_steps": max_steps,
              "d_model": d_model, "repeats": repeats}
    os.makedirs(os.path.dirname(out_json) or ".", exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nseconds per inner optimizer step (median of {repeats}, {max_steps} steps each):")
    for m in per_step:
        print(f"  {m:8s} {median[m]:.4f}   runs: {', '.join(f'{v:.4f}' for v in per_step[m])}")
    print(f"RKIF / SeqLoRA = {ratio:.3f}   (floor (K+M)/K = {floor:.2f} at K={inner_iterations}, M={outer_iterations})")
    print(f"written to {out_json}")


if __name__ == "__main__":
    run(main)
