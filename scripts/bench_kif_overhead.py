"""Seconds per inner optimizer step of Recurrent-KIF vs plain sequential LoRA, measured in one run.

    .venv/bin/python scripts/bench_kif_overhead.py [--repeats 5] [--max_steps 64]
    .venv-current/bin/python scripts/bench_kif_overhead.py --base_model path/to/model.gguf   # a real LLaMA-kind LM

With --base_model (a causal LM: a GGUF file on the current stack, or a model folder) the runs train that model
(LoRA on q_proj, v_proj; batch 8 of prompts cut at --cutoff_len) instead of the tiny T5, and the share of an
inner step spent in this project's own code (the importance update, the fusion's thresholds, masks and
statistics, the memory draw) is measured on its own on the model's LoRA tensors.

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

from rkif.training import TRAIN
from rkif.synthetic import write_synthetic_benchmark
from rkif.cli_runner import run
from rkif.run_folders import adapter_dir
from rkif.tiny import build_tiny_t5, corpus_from_data_dir
from rkif.settings import KIFConfig, MemorySettings


def own_code_seconds(base_model, inner_iterations, outer_iterations, cutoff_len, repeats=5):
    """Seconds of this project's own work per inner step, on the model's LoRA tensors (r 8 on q_proj, v_proj)
    with random gradients: (K + M) importance updates, one fusion (two global thresholds and masks, the fused
    weights, the statistics) and M memory draws (indices and the collated batch of 8), per K inner steps."""
    import time

    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from rkif.adapters import lora_parameters
    from rkif.causal import load_tokenizer
    from rkif.compat import dense_model, pretrained_source
    from rkif.fusion import fuse, fusion_statistics, global_mask, global_threshold
    from rkif.importance import ImportanceTracker
    from rkif.lora import new_lora_model
    from rkif.sampling import memory_batch_indices

    source, gguf = pretrained_source(base_model, model=True)
    model = new_lora_model(dense_model(AutoModelForCausalLM.from_pretrained(source, **gguf)), r=8, alpha=16,
                           dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    params = lora_parameters(model)
    generator = torch.Generator().manual_seed(0)
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=generator)
    inner, outer = ImportanceTracker(), ImportanceTracker()
    tokenizer = load_tokenizer(base_model)
    memory = [{"input_ids": list(range(5, 5 + cutoff_len)), "attention_mask": [1] * cutoff_len,
               "labels": [-100] * (cutoff_len - 4) + [7, 8, 9, 10]} for _ in range(64)]
    collate = DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True)
    timings = {"importance_update": [], "fusion": [], "memory_draw": []}
    for _ in range(repeats):
        start = time.perf_counter()
        inner.update(model.named_parameters())
        outer.update(model.named_parameters())
        timings["importance_update"].append((time.perf_counter() - start) / 2)
        start = time.perf_counter()
        with torch.no_grad():
            anchor = {n: p.detach().clone() for n, p in params.items()}
            delta_in = {n: p.detach() - anchor[n] for n, p in params.items()}
            delta_out = {n: p.grad for n, p in params.items()}
            masks = []
            for tracker in (inner, outer):
                scores = tracker.scores()
                masks.append(global_mask(scores, 0.8, global_threshold(scores, 0.8)))
            fuse(anchor, delta_in, delta_out, *masks)
            {k: float(v) for k, v in fusion_statistics(delta_in, delta_out, *masks).items()}
        timings["fusion"].append(time.perf_counter() - start)
        start = time.perf_counter()
        collate([dict(memory[i]) for i in memory_batch_indices(len(memory), 8, generator)])
        timings["memory_draw"].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in timings.items()}
    K, M = inner_iterations, outer_iterations
    per_inner_step = ((K + M) * median["importance_update"] + median["fusion"] + M * median["memory_draw"]) / K
    return {"seconds": median, "lora_tensors": len(params), "lora_entries": sum(p.numel() for p in params.values()),
            "per_inner_step": per_inner_step}


def main(repeats=5, max_steps=64, inner_iterations=KIFConfig.inner_iterations,
         outer_iterations=KIFConfig.outer_iterations, d_model=128, n_train=400,
         out_json="output/bench/kif_overhead.json", base_model=None, cutoff_len=96):
    """base_model: a causal LM (GGUF file or model folder) to time instead of the tiny T5; cutoff_len: its
    prompts' length in tokens (batch 8)."""
    work = tempfile.mkdtemp(prefix="rkif_bench_")
    data = os.path.join(work, "data")
    tasks = write_synthetic_benchmark(data, ("weather", "sport"), n_train=n_train, n_dev=16, n_test=16, seed=0)
    order = os.path.join(data, "order.json")
    with open(order, "w") as f:
        json.dump(tasks, f)
    if base_model:
        model, train = base_model, TRAIN["llama"]
        extra = dict(micro_batch_size=8, cutoff_len=cutoff_len, gradient_checkpointing=False,
                     prompt_template_name="chatml" if base_model.lower().endswith(".gguf") else "alpaca")
    else:
        model, train = build_tiny_t5(os.path.join(work, "tiny_t5"), corpus_from_data_dir(data), d_model=d_model,
                                     d_ff=4 * d_model, num_heads=4), TRAIN["t5"]
        extra = dict(micro_batch_size=2)
    common = dict(base_model=model, data_dir=data, dataset_id=order, num_epochs=100, max_steps=max_steps,
                  val_set_size=0, eval_steps=10**6, logging_steps=10**6, warmup_steps=5, batch_size=8,
                  inner_iterations=inner_iterations, outer_iterations=outer_iterations,
                  train_batch_size_outer=KIFConfig.train_batch_size_outer,
                  memory_data_ratio=MemorySettings.memory_data_ratio, **extra)
    first = os.path.join(work, "task0")
    train(method_name="SeqLoRA", task_id=0, output_path=first, **common)
    task0 = adapter_dir(first, model, "SeqLoRA", "order", 0, "weather")

    per_step = {"SeqLoRA": [], "RKIF": []}
    for r in range(repeats):
        for method in ("SeqLoRA", "RKIF"):
            out = os.path.join(work, f"{method}_{r}")
            shutil.copytree(task0, adapter_dir(out, model, method, "order", 0, "weather"))
            train(method_name=method, task_id=1, output_path=out, **common)
            with open(os.path.join(adapter_dir(out, model, method, "order", 1, "sport"), "run_info.json")) as f:
                info = json.load(f)
            per_step[method].append(info["train_metrics"]["train_runtime"] / info["global_steps"])
            if method == "RKIF":
                assert info["kif"]["fusions"] == max_steps // inner_iterations, info["kif"]

    median = {m: statistics.median(v) for m, v in per_step.items()}
    ratio = median["RKIF"] / median["SeqLoRA"]
    floor = (inner_iterations + outer_iterations) / inner_iterations
    result = {"seconds_per_inner_step": per_step, "median": median, "ratio_rkif_over_seqlora": ratio,
              "floor_(K+M)/K": floor, "K": inner_iterations, "M": outer_iterations, "max_steps": max_steps,
              "model": base_model or f"tiny T5, d_model {d_model}", "repeats": repeats}
    if base_model:
        own = own_code_seconds(base_model, inner_iterations, outer_iterations, cutoff_len)
        result["own_code"] = {**own, "share_of_rkif_inner_step": own["per_inner_step"] / median["RKIF"]}
    os.makedirs(os.path.dirname(out_json) or ".", exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nseconds per inner optimizer step (median of {repeats}, {max_steps} steps each):")
    for m in per_step:
        print(f"  {m:8s} {median[m]:.4f}   runs: {', '.join(f'{v:.4f}' for v in per_step[m])}")
    print(f"RKIF / SeqLoRA = {ratio:.3f}   (floor (K+M)/K = {floor:.2f} at K={inner_iterations}, M={outer_iterations})")
    if "own_code" in result:
        own = result["own_code"]
        print(f"own code per inner step {own['per_inner_step']:.4f} s = {own['share_of_rkif_inner_step']:.2%} of an "
              f"RKIF inner step ({', '.join(f'{k} {v:.4f} s' for k, v in own['seconds'].items())}; "
              f"{own['lora_tensors']} LoRA tensors, {own['lora_entries']} entries)")
    print(f"written to {out_json}")


if __name__ == "__main__":
    run(main)
