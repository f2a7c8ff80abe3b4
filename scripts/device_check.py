"""One prepared, unattended check for a GPU machine: real shapes, random weights, the real code, no downloads.

    .venv/bin/python scripts/device_check.py                 # on the GPU machine (about 5 minutes on one H200)
    .venv/bin/python scripts/device_check.py --tiny          # the same sections on CPU with tiny shapes

Builds random-weight models of the real shapes (T5-large: d_model 1024, 24+24 layers, 16 heads,
d_ff 2816 gated-gelu as T5 v1.1, or --t5_d_ff 4096 for v1's relu; vocab 32128; LLaMA-2-7B:
hidden 4096, 32 heads, intermediate 11008, vocab 32000, --llama_layers of its 32 layers) with a
small tokenizer trained on the spot, and two synthetic tasks with inputs of about --input_words
words, and runs these sections, each under its own time limit (--section_seconds); a section
that fails or runs out of time is recorded with its error and the next one goes on, and
{out}/device_check.json is rewritten after every section:
- {backbone}_methods: every method (RKIF, SeqLoRA, Replay, OLoRA, IncLoRA, EWC, MTL) on tasks 0
  and 1, a few steps each (T5 in fp32 as released, LLaMA in bf16): seconds per step, peak GPU
  memory, fusions, and the RKIF / SeqLoRA step-time ratio;
- {backbone}_precisions: RKIF task 1 in the other precisions (T5 bf16; LLaMA fp16 with the
  gradient scaler) and with the separate outer optimizer;
- {backbone}_resume: RKIF task 1 stopped at a checkpoint and resumed: the adapter against an
  uninterrupted run's;
- {backbone}_generation: batched against one-at-a-time greedy generation (throughput ratio,
  identical outputs) at the default numerics (fp32, what the grid plans with), and bf16 numerics
  (bf16 base, LoRA unmerged in fp32) against them: the share of equal predictions;
- {backbone}_ddp (two or more GPUs; with --tiny, --ddp_ranks CPU processes on gloo): a torchrun task 1,
  T5 RKIF, whose ranks must hold bitwise equal LoRA weights after every fusion, and LLaMA EWC with its
  default gradient checkpointing (a penalty on LoRA weights inside checkpointed blocks). torchrun runs in
  a process group of its own, killed whole when the section ends early.
Outer steps take the real outer batch (T5 8, LLaMA 64: the memory is made large enough; the JSON
records outer_batch_used), and the JSON records the layer count of each model (settings.layers):
scripts/grid.py scales the step times it reads by the model's own layer count. A section that runs
out of time keeps the figures of what it finished; --deadline_seconds bounds the whole run (9 minutes
by default), and a section not started by then is recorded as skipped.
The training scripts refuse a process that sees several GPUs (DataParallel); this check runs its
in-process sections on the first GPU and gives torchrun all of them. With --tiny the GPU-only
precisions run as fp32 (recorded as such).
"""

import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from rkif.cli_runner import run
from rkif.methods import METHOD_NAMES, get_method
from rkif.plain_data import load_plain
from rkif.run_folders import run_dir


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


def run_name(model, method):
    return os.path.basename(run_dir("", model, method, "order"))


def task_figures(out, model, method, task):
    """s/step, steps, fusions and the last fusion of one trained task, from its run_info.json."""
    with open(os.path.join(out, run_name(model, method), task, "run_info.json")) as f:
        info = json.load(f)
    history = info["kif"]["fusion_history"]
    figures = {"seconds_per_step": info["train_metrics"]["train_runtime"] / max(info["global_steps"], 1),
               "steps": info["global_steps"], "fusions": len(history), "peak_gpu_memory_gib": peak_memory_gib(),
               "precision": info["precision"]}
    if info["kif"].get("enabled"):  # the memory batch an outer step really took (capped by the memory's size)
        figures["outer_batch_used"] = min(info["kif"]["kif_train_batch_size_outer"], info["kif"]["memory_size"])
    if history:
        figures.update(outer_loop_seconds=statistics.median(h["outer_seconds"] for h in history),
                       fusion_seconds=statistics.median(h["fusion_seconds"] for h in history),
                       last_fusion=history[-1])
    return figures


def methods_section(train, model, data, order, out, flags, tasks, result):
    """Every method on tasks 0 and 1 (MTL: once, on both); each method's failure is its own. Figures go into
    result as each method finishes, so that a section cut short by its time limit keeps them."""
    failed = []
    for method in METHOD_NAMES:
        try:
            peak_memory_reset()
            for t in get_method(method).trained_task_ids(len(tasks)):
                train(method_name=method, task_id=t, output_path=out, base_model=model, data_dir=data,
                      dataset_id=order, **flags)
            result[method] = {"ok": True, **task_figures(out, model, method, f"1-{tasks[1]}")}
        except BaseException as e:  # noqa: BLE001 - recorded; the other methods go on
            if isinstance(e, (KeyboardInterrupt, SectionTimeout)):
                raise
            result[method] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            failed.append(method)
    if result.get("RKIF", {}).get("ok") and result.get("SeqLoRA", {}).get("ok"):
        result["ratio_rkif_over_seqlora"] = result["RKIF"]["seconds_per_step"] / result["SeqLoRA"]["seconds_per_step"]
    if failed:
        raise SectionFailed(f"methods failed: {failed}", result)
    return result


def copy_task0(src_out, dst_out, model, method, tasks):
    shutil.rmtree(dst_out, ignore_errors=True)
    shutil.copytree(os.path.join(src_out, run_name(model, method), f"0-{tasks[0]}"),
                    os.path.join(dst_out, run_name(model, method), f"0-{tasks[0]}"))


def precisions_section(train, model, data, order, out, flags, tasks, variants, result):
    """RKIF task 1 from the methods section's task-0 adapter, once per variant {name: extra flags}; figures
    go into result as each variant finishes."""
    for name, extra in variants.items():
        run_out = os.path.join(out, "variants", name)
        copy_task0(out, run_out, model, "RKIF", tasks)
        peak_memory_reset()
        train(method_name="RKIF", task_id=1, output_path=run_out, base_model=model, data_dir=data, dataset_id=order,
              **{**flags, **extra})
        result[name] = {"flags": extra, **task_figures(run_out, model, "RKIF", f"1-{tasks[1]}")}
    return result


def resume_section(train, model, data, order, out, flags, tasks):
    """RKIF task 1 run through, and again stopped at its middle checkpoint and resumed."""
    steps = flags["max_steps"]
    runs = {}
    for name in ("through", "resumed"):
        run_out = os.path.join(out, "resume", name)
        copy_task0(out, run_out, model, "RKIF", tasks)
        train(method_name="RKIF", task_id=1, output_path=run_out, base_model=model, data_dir=data, dataset_id=order,
              **{**flags, "eval_steps": steps // 2})
        task = os.path.join(run_out, run_name(model, "RKIF"), f"1-{tasks[1]}")
        if name == "resumed":
            keep = f"checkpoint-{steps // 2}"
            for f in os.listdir(task):  # the folder as a kill right after the middle checkpoint leaves it
                path = os.path.join(task, f)
                if f != keep:
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            train(method_name="RKIF", task_id=1, output_path=run_out, base_model=model, data_dir=data,
                  dataset_id=order, **{**flags, "eval_steps": steps // 2}, resume_from_checkpoint=True)
        runs[name] = load_plain(os.path.join(task, "adapter_model.bin"))
    a, b = runs["through"], runs["resumed"]
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    return {"resumed_from_step": steps // 2, "of_steps": steps, "bitwise": all(a[k].equal(b[k]) for k in a),
            "max_abs_diff": diff}


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
            "differing_outputs": sum(a != b for a, b in zip(single, batched)), "peak_gpu_memory_gib": peak_memory_gib(),
            "predictions": batched}


def generation_section(factory, adapter, records, batch_size, other_precision):
    """Batched against single at the default precision (fp32, what runs use and the grid plans with), then the
    share of other_precision's predictions that equal the default's."""
    result = generation_figures(factory("auto"), adapter, records, batch_size)
    other = factory(other_precision)(adapter)
    predictions = [p for i in range(0, len(records), batch_size) for p in other(records[i:i + batch_size])]
    result["precision"] = "auto"
    result["other_precision"] = other_precision
    result["other_agreement_with_default"] = (sum(a == b for a, b in zip(result.pop("predictions"), predictions))
                                              / len(records))
    return result


class SectionTimeout(Exception):
    pass


class SectionFailed(Exception):
    """A section that ran but failed in part: its partial figures are kept."""

    def __init__(self, message, figures):
        super().__init__(message)
        self.figures = figures


@contextlib.contextmanager
def time_limit(seconds):
    def expire(signum, frame):
        raise SectionTimeout(f"ran out of its {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_section(report, name, fn, seconds, path, fail_section=None):
    """Run fn(figures) under the time limit; record its figures or its error (with the figures it put in
    ``figures`` before it stopped: a section cut short keeps what it finished); rewrite the JSON."""
    started = time.time()
    figures = {}
    try:
        with time_limit(seconds):
            if name == fail_section:
                raise RuntimeError(f"forced failure of section {name} (--fail_section)")
            entry = {"ok": True, **fn(figures)}
    except SectionFailed as e:
        entry = {"ok": False, "error": str(e), **figures, **e.figures}
    except Exception as e:  # noqa: BLE001 - recorded; the next section goes on
        entry = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:],
                 **figures}
    entry["seconds"] = round(time.time() - started, 2)
    entry["peak_gpu_memory_gib"] = peak_memory_gib()
    report["sections"][name] = entry
    write_report(report, path)
    print(f"section {name}: {'ok' if entry['ok'] else 'FAILED: ' + entry['error']} ({entry['seconds']} s)",
          flush=True)
    return entry


def write_report(report, path):
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def descendants(pid):
    """Every process below pid (from /proc), children first found; torchrun starts each rank in a session
    of its own, so a kill of torchrun's process group does not reach them."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def run_process_group(cmd, env, timeout):
    """Run cmd (torchrun and the ranks it starts) in a process group of its own; whatever ends the wait
    (its timeout, the section's time limit, Ctrl-C) stops every process below it: SIGTERM to the launcher
    (torchrun passes it on to its ranks), then SIGKILL to each descendant and their groups, so no rank is
    left running on a GPU or holding the pipes open."""
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        below = descendants(process.pid)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pid in [process.pid, *below]:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        raise
    return process.returncode, stdout, stderr


def ddp_check(backbone, model, data, order, out, ranks, flags, tasks, seconds, method="RKIF", nccl=True):
    """Task 1 of method under torchrun on ``ranks`` GPUs (NCCL), or with --tiny on as many CPU processes (gloo);
    with RKIF, the ranks' LoRA digests after each fusion must agree. LLaMA runs with its default gradient
    checkpointing."""
    run_out = os.path.join(out, f"ddp_{method}")
    copy_task0(out, run_out, model, method, tasks)
    args = [f"--{k}={v}" for k, v in {**flags, "batch_size": 2 * ranks * 2, "micro_batch_size": 2,
                                      "train_batch_size_outer": 2 * ranks, "eval_steps": flags["max_steps"]}.items()]
    script = "finetune_KIF_t5lora.py" if backbone == "t5" else "finetune_KIF_llama.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
           os.path.join(ROOT, "src", script), f"--base_model={model}", f"--data_dir={data}",
           f"--dataset_id={order}", "--task_id=1", f"--method_name={method}", f"--output_path={run_out}", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get(ALL_GPUS, "") if nccl else "",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code, _, stderr = run_process_group(cmd, env, seconds)
    if code != 0:
        raise RuntimeError(f"torchrun exited {code}: {stderr[-2000:]}")
    task = os.path.join(run_out, run_name(model, method), f"1-{tasks[1]}")
    with open(os.path.join(task, "run_info.json")) as f:
        info = json.load(f)
    result = {"ranks": ranks, "backend": "nccl" if nccl else "gloo", "method": method, "steps": info["global_steps"],
              "gradient_checkpointing": info.get("gradient_checkpointing")}
    if method == "RKIF":
        checkpoint = os.path.join(task, f"checkpoint-{flags['max_steps']}")
        digests = [[h["lora_sha256"] for h in load_plain(os.path.join(checkpoint, f"kif_state_{r}.pt"))["kif_history"]]
                   for r in range(ranks)]
        if not digests[0] or any(d != digests[0] for d in digests):
            raise SectionFailed("the ranks' LoRA weights differ after a fusion", result)
        result["fusions"] = len(digests[0])
    return result


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


ALL_GPUS = "RKIF_DEVICE_CHECK_ALL_GPUS"  # the GPUs torchrun gets, when this process was narrowed to one


def one_gpu_per_process():
    """The in-process sections train on one GPU (the scripts refuse DataParallel): with several visible,
    run again with the first only, remembering all of them for the torchrun section."""
    import torch

    if ALL_GPUS in os.environ or torch.cuda.device_count() < 2:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(str(i) for i in range(torch.cuda.device_count()))
    env = {**os.environ, ALL_GPUS: visible, "CUDA_VISIBLE_DEVICES": visible.split(",")[0]}
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


def main(tiny=False, out="output/device_check", steps=8, inner_iterations=2, outer_iterations=2,
         llama_layers=4, t5_d_ff=2816, input_words=150, gen_examples=16, gen_batch_size=16, gen_max_length=64,
         skip_llama=False, section_seconds=240, deadline_seconds=540, ddp_ranks=2, fail_section=None):
    """tiny: CPU, tiny shapes, the same sections. t5_d_ff: 2816 (v1.1, gated-gelu) or 4096 (v1, relu).
    section_seconds: each section's time limit; deadline_seconds: the whole run's (a section gets what is
    left, and none starts after it). ddp_ranks: with --tiny, the CPU processes of the DDP sections (gloo;
    0 skips them); on GPUs every GPU is a rank. fail_section: a section to fail on purpose (tests)."""
    import torch

    from rkif.training import TRAIN
    from rkif.causal import causal_predictor_factory
    from rkif.task_files import load_records, task_file
    from rkif.seq2seq import seq2seq_predictor_factory
    from rkif.synthetic import write_synthetic_benchmark
    from rkif.tiny import build_tiny_llama, build_tiny_t5, corpus_from_data_dir, llama_corpus

    gpu = torch.cuda.is_available()
    if not tiny and not gpu:
        sys.exit("error: no GPU found; run with --tiny for the CPU version of this check")
    if not tiny:
        one_gpu_per_process()
    started = time.time()
    out = os.path.abspath(out)
    shutil.rmtree(out, ignore_errors=True)
    data = os.path.join(out, "data")
    n_train = 64 if tiny else 256
    tasks = list(write_synthetic_benchmark(data, ("weather", "sport"), n_train=n_train, n_dev=8,
                                           n_test=gen_examples, seed=0))
    order = os.path.join(data, "order.json")
    with open(order, "w") as f:
        json.dump(tasks, f)
    if not tiny:
        lengthen(data, input_words)
    device = "cuda" if gpu else "cpu"
    gpus = len(os.environ.get(ALL_GPUS, "").split(",")) if ALL_GPUS in os.environ else torch.cuda.device_count()
    ranks = gpus if gpu else (ddp_ranks if tiny else 0)
    path = os.path.join(out, "device_check.json")
    layers = {"t5": 2 if tiny else 24, "llama": 2 if tiny else llama_layers}
    report = {"versions": versions(), "tiny": tiny, "gpus": gpus, "settings": {
        "steps": steps, "K": inner_iterations, "M": outer_iterations, "input_words": None if tiny else input_words,
        "llama_layers": llama_layers, "layers": layers, "t5_d_ff": t5_d_ff, "section_seconds": section_seconds,
        "deadline_seconds": deadline_seconds}, "sections": {}}
    common = dict(val_set_size=0, max_steps=steps, num_epochs=1, warmup_steps=1, logging_steps=10**6,
                  eval_steps=10**6, inner_iterations=inner_iterations, outer_iterations=outer_iterations)

    def memory_for(outer_batch):
        """memory_data_ratio (%) of task 0 that holds a whole outer batch: an outer step of the real size."""
        return dict(train_batch_size_outer=outer_batch, memory_data_ratio=max(10, math.ceil(100 * outer_batch / n_train)))

    # GPU-only precisions run as fp32 on CPU (the scripts refuse them there); recorded per run
    half = (lambda p: p) if gpu else (lambda p: "fp32")

    def section(name, fn):
        left = deadline_seconds - (time.time() - started)
        if left < 5:
            report["sections"][name] = {"ok": None, "skipped": f"the run's deadline ({deadline_seconds} s) has passed"}
            write_report(report, path)
            print(f"section {name}: skipped (deadline)", flush=True)
            return
        run_section(report, name, fn, max(1, min(section_seconds, int(left))), path, fail_section)

    backbones = {
        "t5": dict(train=TRAIN["t5"], factory=seq2seq_predictor_factory, suffix="_T5",
                   fields=("id", "input", "output"),
                   flags=dict(common, batch_size=8, micro_batch_size=2, precision="fp32", **memory_for(8)),
                   variants={"bf16": {"precision": half("bf16")},
                             "separate_outer_optimizer": {"outer_optimizer": "separate"}}),
        "llama": dict(train=TRAIN["llama"], factory=causal_predictor_factory, suffix="",
                      fields=("id", "instruction", "input", "output"),
                      flags=dict(common, batch_size=8 if tiny else 64, micro_batch_size=2 if tiny else 16,
                                 cutoff_len=512, precision=half("bf16"), **memory_for(8 if tiny else 64)),
                      variants={"fp16_gradient_scaler": {"precision": half("fp16")},
                                "separate_outer_optimizer": {"outer_optimizer": "separate"},
                                "outer_micro_batch_size": {"outer_micro_batch_size": 4 if tiny else 16}}),
    }
    for name, b in backbones.items():
        if name == "llama" and skip_llama:
            continue
        model = os.path.join(out, name)
        if name == "t5":
            shapes = (dict(d_model=32, d_ff=64, num_layers=2, num_heads=2) if tiny else
                      dict(d_model=1024, d_ff=t5_d_ff, num_layers=24, num_heads=16, d_kv=64, model_vocab_size=32128,
                           feed_forward_proj="gated-gelu" if t5_d_ff == 2816 else "relu", dropout_rate=0.1))
            build_tiny_t5(model, corpus_from_data_dir(data), vocab_size=256 if tiny else 512, device=device, seed=0,
                          **shapes)
        else:
            shapes = (dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2) if tiny else
                      dict(hidden_size=4096, intermediate_size=11008, num_layers=llama_layers, num_heads=32,
                           model_vocab_size=32000))
            build_tiny_llama(model, llama_corpus(data), vocab_size=256 if tiny else 512, device=device, seed=0,
                             dtype=torch.bfloat16 if gpu else None, **shapes)
        runs = os.path.join(out, f"{name}_runs")
        section(f"{name}_methods", lambda figures: methods_section(b["train"], model, data, order, runs, b["flags"],
                                                                   tasks, figures))
        section(f"{name}_precisions", lambda figures: precisions_section(b["train"], model, data, order, runs,
                                                                         b["flags"], tasks, b["variants"], figures))
        section(f"{name}_resume", lambda figures: resume_section(b["train"], model, data, order, runs, b["flags"],
                                                                 tasks))
        adapter = os.path.join(runs, run_name(model, "RKIF"), f"1-{tasks[1]}")
        records = load_records(task_file(data, "test", tasks[1], b["suffix"]), b["fields"])
        section(f"{name}_generation", lambda figures: generation_section(
            lambda precision: b["factory"](model, precision, None, 512, gen_max_length), adapter, records,
            gen_batch_size, "bf16"))
        # T5: RKIF, the ranks' weights compared after every fusion; LLaMA: a penalty method (EWC) on LoRA weights
        # inside gradient-checkpointed blocks, computed outside DDP's forward
        method = "RKIF" if name == "t5" else "EWC"
        if ranks >= 2:
            section(f"{name}_ddp", lambda figures: ddp_check(name, model, data, order, runs, ranks, b["flags"], tasks,
                                                             section_seconds, method, nccl=gpu))
        else:
            report["sections"][f"{name}_ddp"] = {"ok": None, "skipped": f"{gpus} GPU(s): needs two or more"
                                                 + ("" if gpu else " (with --tiny: --ddp_ranks 2)")}
        shutil.rmtree(runs, ignore_errors=True)
        shutil.rmtree(model, ignore_errors=True)

    report["wall_seconds"] = round(time.time() - started, 1)
    write_report(report, path)
    print_table(report)
    print(f"written: {path}")
    if not all(s["ok"] is not False for s in report["sections"].values()):
        sys.exit(1)


def print_table(report):
    v = report["versions"]
    print(f"\ndevice {v['device']} ({report['gpus']} GPU), torch {v['torch']}, transformers {v['transformers']}, "
          f"peft {v['peft']}, CUDA {v['cuda']}")
    mem = lambda x: "-" if x is None else f"{x:.1f} GiB"  # noqa: E731
    for name, s in report["sections"].items():
        status = {True: "ok", False: "FAILED", None: "skipped"}[s["ok"]]
        print(f"{name:24s} {status:8s} {s.get('seconds', 0):7.1f} s  peak {mem(s.get('peak_gpu_memory_gib'))}"
              + (f"  {s['error'][:150]}" if s["ok"] is False else ""))
        if name.endswith(("_methods", "_precisions")):
            for key, m in s.items():
                if isinstance(m, dict) and "seconds_per_step" in m:
                    print(f"    {key:26s} {m['seconds_per_step']:.3f} s/step  peak {mem(m['peak_gpu_memory_gib'])}"
                          f"  fusions {m['fusions']}" + (f"  fusion {m['fusion_seconds']:.4f} s"
                                                         if "fusion_seconds" in m else ""))
                elif isinstance(m, dict) and m.get("ok") is False:
                    print(f"    {key:26s} FAILED {m['error'][:150]}")
            if "ratio_rkif_over_seqlora" in s:
                print(f"    RKIF / SeqLoRA step time {s['ratio_rkif_over_seqlora']:.2f}")
        elif name.endswith("_resume") and s["ok"]:
            print(f"    resumed at step {s['resumed_from_step']} of {s['of_steps']}: bitwise {s['bitwise']}, "
                  f"max |diff| {s['max_abs_diff']:.3g}")
        elif name.endswith("_ddp") and s["ok"]:
            print(f"    {s['method']} on {s['ranks']} ranks ({s['backend']}), {s['steps']} steps"
                  + (f", {s['fusions']} fusions with equal weights on every rank" if "fusions" in s else ""))
        elif name.endswith("_generation") and s["ok"]:
            print(f"    {s['examples']} examples: one at a time {s['seconds_one_at_a_time']:.2f} s, batched "
                  f"{s['seconds_batched']:.2f} s ({s['throughput_ratio']:.1f}x), identical {s['identical_outputs']}; "
                  f"{s['other_precision']} vs the fp32 default: agreement {s['other_agreement_with_default']:.2f}")
    print(f"wall time {report['wall_seconds']:.0f} s")


if __name__ == "__main__":
    run(main)
