"""One prepared check for a GPU machine: real shapes, random weights, the real code paths, no downloads.

    .venv/bin/python scripts/device_check.py                 # on the GPU machine (about 5 minutes on one H200)
    .venv/bin/python scripts/device_check.py --tiny          # the same code on CPU with tiny shapes (< 1 minute)

Builds random-weight models of the real shapes (T5-large: d_model 1024, 24+24 layers, 16 heads,
d_ff 2816 gated-gelu as T5 v1.1, or --t5_d_ff 4096 for v1's relu; vocab 32128; LLaMA-2-7B:
hidden 4096, 32 heads, intermediate 11008, vocab 32000, --llama_layers of its 32 layers) with a
small tokenizer trained on the spot, and synthetic tasks with inputs of about --input_words
words. Through finetune_KIF_*.train and the generation code it measures:
- seconds per optimizer step of RKIF and SeqLoRA on task 1 from the same task-0 adapter (the
  ratio), peak GPU memory of each, and the time of one outer loop and of one fusion;
- batched generation (bf16 on a GPU) against one example at a time: throughput ratio and
  whether the outputs are identical;
- with two or more GPUs, a torchrun (NCCL) RKIF task whose ranks must hold bitwise equal LoRA
  weights after every fusion.
Prints a table and writes {out}/device_check.json (device, versions, every figure).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from rkif.flags import run  # noqa: E402
from rkif.plain_data import load_plain  # noqa: E402


def lengthen(data_dir, words):
    """Inputs of about ``words`` words (the synthetic examples are short; real ones run to hundreds of tokens)."""
    for split in os.listdir(data_dir):
        folder = os.path.join(data_dir, split)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            with open(path) as f:
                records = json.load(f)
            for r in records:
                body = r["input"].split()
                r["input"] = " ".join((body * (words // max(1, len(body)) + 1))[:max(words, len(body))])
            with open(path, "w") as f:
                json.dump(records, f)


def peak_memory_reset():
    import gc

    import torch

    gc.collect()  # the previous run's model and optimizer, so that they do not count in this peak
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib():
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def training_figures(train, model, data, order, out, flags, tasks):
    """Task 0 once (SeqLoRA), then task 1 with SeqLoRA and RKIF from that adapter: s/step, memory, fusion."""
    name = os.path.basename(model)
    first = os.path.join(out, "task0")
    train(method_name="SeqLoRA", task_id=0, output_path=first, base_model=model, data_dir=data, dataset_id=order,
          **flags)
    result = {}
    for method in ("SeqLoRA", "RKIF"):
        run_out = os.path.join(out, method)
        shutil.rmtree(run_out, ignore_errors=True)
        shutil.copytree(os.path.join(first, f"{name}lora_SeqLoRA_dataset_id_order", f"0-{tasks[0]}"),
                        os.path.join(run_out, f"{name}lora_{method}_dataset_id_order", f"0-{tasks[0]}"))
        peak_memory_reset()
        train(method_name=method, task_id=1, output_path=run_out, base_model=model, data_dir=data, dataset_id=order,
              **flags)
        with open(os.path.join(run_out, f"{name}lora_{method}_dataset_id_order", f"1-{tasks[1]}",
                               "run_info.json")) as f:
            info = json.load(f)
        figures = {"seconds_per_step": info["train_metrics"]["train_runtime"] / info["global_steps"],
                   "steps": info["global_steps"], "peak_gpu_memory_gib": peak_memory_gib()}
        history = info["kif"]["fusion_history"]
        if method == "RKIF":
            figures.update(fusions=len(history),
                           outer_loop_seconds=statistics.median(h["outer_seconds"] for h in history),
                           fusion_seconds=statistics.median(h["fusion_seconds"] for h in history),
                           last_fusion=history[-1])
        result[method] = figures
    result["ratio_rkif_over_seqlora"] = result["RKIF"]["seconds_per_step"] / result["SeqLoRA"]["seconds_per_step"]
    return result


def generation_figures(make_predictor, adapter, records, batch_size):
    """The same predictor one example at a time and in batches: seconds, throughput ratio, identical outputs."""
    predict = make_predictor(adapter)
    predict(records[:1])  # warm-up (kernels, allocator)
    peak_memory_reset()
    start = time.perf_counter()
    single = [predict([r])[0] for r in records]
    t_single = time.perf_counter() - start
    start = time.perf_counter()
    batched = [p for i in range(0, len(records), batch_size) for p in predict(records[i:i + batch_size])]
    t_batched = time.perf_counter() - start
    return {"examples": len(records), "batch_size": batch_size, "seconds_one_at_a_time": t_single,
            "seconds_batched": t_batched, "throughput_ratio": t_single / t_batched,
            "identical_outputs": single == batched,
            "differing_outputs": sum(a != b for a, b in zip(single, batched)), "peak_gpu_memory_gib": peak_memory_gib()}


def ddp_check(model, data, order, out, gpus, flags):
    """RKIF task 1 under torchrun on every GPU; the ranks' LoRA digests after each fusion must agree."""
    name = os.path.basename(model)
    run_out = os.path.join(out, "ddp")
    shutil.rmtree(run_out, ignore_errors=True)
    shutil.copytree(os.path.join(out, "task0", f"{name}lora_SeqLoRA_dataset_id_order"),
                    os.path.join(run_out, f"{name}lora_RKIF_dataset_id_order"))
    for sub in os.listdir(os.path.join(run_out, f"{name}lora_RKIF_dataset_id_order")):
        if not sub.startswith("0-"):
            shutil.rmtree(os.path.join(run_out, f"{name}lora_RKIF_dataset_id_order", sub))
    args = [f"--{k}={v}" for k, v in {**flags, "batch_size": 2 * gpus * 2, "micro_batch_size": 2,
                                      "eval_steps": flags["max_steps"]}.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}",
           os.path.join(ROOT, "src", "finetune_KIF_t5lora.py"), f"--base_model={model}", f"--data_dir={data}",
           f"--dataset_id={order}", "--task_id=1", "--method_name=RKIF", f"--output_path={run_out}", *args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"ok": False, "error": p.stderr[-2000:]}
    task = os.path.join(run_out, f"{name}lora_RKIF_dataset_id_order")
    task = os.path.join(task, next(d for d in os.listdir(task) if d.startswith("1-")))
    checkpoint = os.path.join(task, f"checkpoint-{flags['max_steps']}")
    digests = [[h["lora_sha256"] for h in load_plain(os.path.join(checkpoint, f"kif_state_{r}.pt"))["kif_history"]]
               for r in range(gpus)]
    return {"ok": all(d == digests[0] for d in digests) and len(digests[0]) > 0, "ranks": gpus,
            "fusions": len(digests[0]), "backend": "nccl"}


def versions():
    import peft
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "cuda": torch.version.cuda, "gpus": torch.cuda.device_count()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["bf16"] = torch.cuda.is_bf16_supported()
    else:
        info["device"] = "cpu"
    return info


def main(tiny=False, out="output/device_check", steps=16, inner_iterations=8, outer_iterations=4,
         llama_layers=4, t5_d_ff=2816, input_words=150, gen_examples=16, gen_batch_size=16, gen_max_length=64,
         skip_llama=False):
    """tiny: CPU, tiny shapes, the same code. t5_d_ff: 2816 (v1.1, gated-gelu) or 4096 (v1, relu)."""
    import torch

    import finetune_KIF_llama
    import finetune_KIF_t5lora
    from rkif.causal import causal_predictor_factory
    from rkif.data import load_records, task_file
    from rkif.seq2seq import seq2seq_predictor_factory
    from rkif.synthetic import write_synthetic_benchmark
    from rkif.tiny import build_tiny_llama, build_tiny_t5, corpus_from_data_dir, llama_corpus

    gpu = torch.cuda.is_available()
    if not tiny and not gpu:
        sys.exit("error: no GPU found; run with --tiny for the CPU version of this check")
    started = time.time()
    out = os.path.abspath(out)
    shutil.rmtree(out, ignore_errors=True)
    data = os.path.join(out, "data")
    tasks = list(write_synthetic_benchmark(data, ("weather", "sport"), n_train=64 if tiny else 256, n_dev=8,
                                           n_test=gen_examples, seed=0))
    order = os.path.join(data, "order.json")
    with open(order, "w") as f:
        json.dump(tasks, f)
    if not tiny:
        lengthen(data, input_words)
    device, precision = ("cuda", "bf16") if gpu else ("cpu", "fp32")
    report = {"versions": versions(), "tiny": tiny, "settings": {
        "steps": steps, "K": inner_iterations, "M": outer_iterations, "input_words": None if tiny else input_words,
        "llama_layers": llama_layers, "t5_d_ff": t5_d_ff, "generation_precision": precision}}
    common = dict(val_set_size=0, max_steps=steps, num_epochs=1, warmup_steps=2, logging_steps=10**6,
                  eval_steps=10**6, inner_iterations=inner_iterations, outer_iterations=outer_iterations,
                  memory_data_ratio=10)

    # T5-large shapes (fp32 training, the released recipe; --precision bf16 is the faster option)
    t5 = os.path.join(out, "t5")
    shapes = (dict(d_model=32, d_ff=64, num_layers=2, num_heads=2) if tiny else
              dict(d_model=1024, d_ff=t5_d_ff, num_layers=24, num_heads=16, d_kv=64, model_vocab_size=32128,
                   feed_forward_proj="gated-gelu" if t5_d_ff == 2816 else "relu", dropout_rate=0.1))
    build_tiny_t5(t5, corpus_from_data_dir(data), vocab_size=256 if tiny else 512, device=device, seed=0, **shapes)
    t5_flags = dict(common, batch_size=8, micro_batch_size=2, train_batch_size_outer=8)
    report["t5_training"] = training_figures(finetune_KIF_t5lora.train, t5, data, order, os.path.join(out, "t5_runs"),
                                             t5_flags, tasks)
    adapter = os.path.join(out, "t5_runs", "RKIF", "t5lora_RKIF_dataset_id_order", f"1-{tasks[1]}")
    records = load_records(task_file(data, "test", tasks[1]))
    report["t5_generation"] = generation_figures(
        seq2seq_predictor_factory(t5, precision, None, 1024, gen_max_length), adapter, records, gen_batch_size)
    if torch.cuda.device_count() >= 2:
        report["ddp"] = ddp_check(t5, data, order, os.path.join(out, "t5_runs"), torch.cuda.device_count(),
                                  t5_flags)
    else:
        report["ddp"] = {"ok": None, "skipped": f"{torch.cuda.device_count()} GPU(s): needs two or more"}
    shutil.rmtree(os.path.join(out, "t5_runs"), ignore_errors=True)
    shutil.rmtree(t5, ignore_errors=True)

    if not skip_llama:  # LLaMA-2-7B shapes, bf16 base and LoRA in fp32 (the script's auto precision on a GPU)
        llama = os.path.join(out, "llama")
        shapes = (dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2) if tiny else
                  dict(hidden_size=4096, intermediate_size=11008, num_layers=llama_layers, num_heads=32,
                       model_vocab_size=32000))
        build_tiny_llama(llama, llama_corpus(data), vocab_size=256 if tiny else 512, device=device, seed=0,
                         dtype=torch.bfloat16 if gpu else None, **shapes)
        llama_flags = dict(common, batch_size=8 if tiny else 64, micro_batch_size=2 if tiny else 16,
                           train_batch_size_outer=8 if tiny else 64, cutoff_len=512)
        report["llama_training"] = training_figures(finetune_KIF_llama.train, llama, data, order,
                                                    os.path.join(out, "llama_runs"), llama_flags, tasks)
        adapter = os.path.join(out, "llama_runs", "RKIF", "llamalora_RKIF_dataset_id_order", f"1-{tasks[1]}")
        records = load_records(task_file(data, "test", tasks[1], ""), ("id", "instruction", "input", "output"))
        report["llama_generation"] = generation_figures(
            causal_predictor_factory(llama, precision, None, 512, gen_max_length), adapter, records, gen_batch_size)
        shutil.rmtree(os.path.join(out, "llama_runs"), ignore_errors=True)
        shutil.rmtree(llama, ignore_errors=True)

    report["wall_seconds"] = time.time() - started
    with open(os.path.join(out, "device_check.json"), "w") as f:
        json.dump(report, f, indent=2)
    print_table(report)
    print(f"written: {os.path.join(out, 'device_check.json')}")


def print_table(report):
    v = report["versions"]
    print(f"\ndevice {v['device']} ({v['gpus']} GPU), torch {v['torch']}, transformers {v['transformers']}, "
          f"peft {v['peft']}, CUDA {v['cuda']}")
    for backbone in ("t5", "llama"):
        t = report.get(f"{backbone}_training")
        if not t:
            continue
        g = report[f"{backbone}_generation"]
        mem = lambda x: "-" if x is None else f"{x:.1f} GiB"  # noqa: E731
        print(f"{backbone}: s/step SeqLoRA {t['SeqLoRA']['seconds_per_step']:.3f}, "
              f"RKIF {t['RKIF']['seconds_per_step']:.3f}"
              f" (ratio {t['ratio_rkif_over_seqlora']:.2f}); peak memory {mem(t['SeqLoRA']['peak_gpu_memory_gib'])} / "
              f"{mem(t['RKIF']['peak_gpu_memory_gib'])}; outer loop {t['RKIF']['outer_loop_seconds']:.3f} s, fusion "
              f"{t['RKIF']['fusion_seconds']:.4f} s ({t['RKIF']['fusions']} fusions)")
        print(f"{backbone}: generation {g['examples']} examples one at a time {g['seconds_one_at_a_time']:.2f} s, "
              f"batched {g['seconds_batched']:.2f} s ({g['throughput_ratio']:.1f}x), identical outputs: "
              f"{g['identical_outputs']}")
    print(f"ddp: {report['ddp']}")
    print(f"wall time {report['wall_seconds']:.0f} s")


if __name__ == "__main__":
    run(main)
