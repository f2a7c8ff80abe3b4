"""Seed-level parity with the released scripts: the same tasks trained by both, adapters compared.

    .venv/bin/python scripts/compare_with_released.py --released_repo PATH --data_dir DIR [--tasks 4]
    .venv/bin/python scripts/compare_with_released.py --backbone llama --released_repo PATH --data_dir DIR

PATH is a checkout of the original repository (src/, utils/, templates/, trainer.py,
training_args.py); nothing of it is copied into this project. In a scratch folder (--out) this
builds a copy of the installed transformers with the released trainer.py and training_args.py, a
copy of the released src/, utils/ and templates/ with the edits that running on CPU under peft
0.4.0 needs (below), a subsample of the order's data and a tiny model, then trains the order's
first --tasks tasks with the released script and with ours, same flags and seed, on CPU, and
compares each task's final and checkpoint adapters and logged losses. Prints a table and writes
{out}/parity.json.

Edits to the released scripts, applied here at run time (each must match exactly once):
- both training scripts: the `model.state_dict = ...get_peft_model_state_dict...` override goes
  (under peft 0.4.0 it empties every saved adapter);
- LLaMA training: loaded in fp32 rather than 8 bit / fp16, `fp16=False`, no torch.compile;
- both generators: no gradio import, fp32 rather than `model.half()` (T5: and no bf16 load, the
  model on CPU rather than CUDA only), no torch.compile.
When the whole order is trained, the final adapter's OP predictions are compared too: the
released generator (generate_avgPerf_t5lora.py / generate_avgPerf.py) against ours
(generate_avgPerf_t5lora.py / generate_avgPerf_llama.py), example by example (--n_test per task,
inputs longer than the training cutoff, --max_input_length / --cutoff_len, included).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from rkif.errors import InputError
from rkif.cli_runner import run
from rkif.plain_data import load_plain
from rkif.run_folders import adapter_dir, prediction_dir
from rkif.tasks import resolve_order
from rkif.settings import PipelineSettings, RunSettings

STATE_DICT_OVERRIDE = re.compile(r"\n[ \t]*old_state_dict = model\.state_dict\n.*?\.__get__\(model, type\(model\)\)\n",
                                 re.S)
TORCH_COMPILE = re.compile(r'\n[ \t]*if torch\.__version__ >= "2" and sys\.platform != "win32":\n[ \t]*model = '
                           r'torch\.compile\(model\)\n')
EDITS = {
    "src/finetune_KIF_t5lora.py": [(STATE_DICT_OVERRIDE, "\n", "the state_dict override")],
    "src/finetune_KIF_llama.py": [
        (STATE_DICT_OVERRIDE, "\n", "the state_dict override"),
        (re.compile(r"load_in_8bit=True,\s*torch_dtype=torch\.float16,"), "torch_dtype=torch.float32,",
         "the 8-bit fp16 load"),
        (re.compile(r"\bfp16=True,"), "fp16=False,", "fp16=True"),
        (TORCH_COMPILE, "\n", "torch.compile"),
    ],
    "src/generate_avgPerf_t5lora.py": [
        (re.compile(r"\nimport gradio as gr\n"), "\n", "the gradio import"),
        (re.compile(r'if device == "cuda":'), "if True:  # edited: load on CPU as well", "the CUDA-only branch"),
        (re.compile(r"torch_dtype=torch\.bfloat16,"), "torch_dtype=torch.float32,", "the bf16 load"),
        (re.compile(r"\n[ \t]*if not load_8bit:\n[ \t]*model\.half\(\)[^\n]*\n"), "\n", "model.half()"),
        (TORCH_COMPILE, "\n", "torch.compile"),
        (re.compile(r"\.input_ids\.cuda\(\)"), ".input_ids", ".cuda() on the input"),
    ],
    "src/generate_avgPerf.py": [
        (re.compile(r"\nimport gradio as gr\n"), "\n", "the gradio import"),
        (re.compile(r"\n[ \t]*if not load_8bit:\n[ \t]*model\.half\(\)[^\n]*\n"), "\n", "model.half()"),
        (TORCH_COMPILE, "\n", "torch.compile"),
    ],
}
SCRIPTS = {"t5": ("src/finetune_KIF_t5lora.py", "_T5"), "llama": ("src/finetune_KIF_llama.py", "")}
# per backbone: the released generator, ours, the folder its test files are read from, our cutoff flag
GENERATORS = {"t5": ("src/generate_avgPerf_t5lora.py", "src/generate_avgPerf_t5lora.py", "data_longsequence",
                     "--max_input_length"),
              "llama": ("src/generate_avgPerf.py", "src/generate_avgPerf_llama.py", "data_longsequence_llama",
                        "--cutoff_len")}


def edit_released(name, source):
    """The released file `name` with the edits of EDITS applied; each must match exactly once."""
    for pattern, replacement, what in EDITS[name]:
        source, n = pattern.subn(replacement, source)
        if n != 1:
            raise InputError(f"the released {name}: expected exactly one match for {what} ({pattern.pattern!r}), "
                             f"found {n}; is --released_repo the original repository?")
    return source


def strip_state_dict_override(source):
    """The released T5 script without its `model.state_dict = ...get_peft_model_state_dict...` block."""
    return edit_released("src/finetune_KIF_t5lora.py", source)


def prepare(released_repo, data_dir, tasks, out, n_train, n_dev, seed, backbone=PipelineSettings.backbone, n_test=1):
    import transformers

    from rkif.tiny import build_tiny_llama, build_tiny_t5, corpus_from_data_dir, llama_corpus

    script, suffix = SCRIPTS[backbone]
    needed = ["trainer.py", "training_args.py", script, "utils/load_data.py"]
    needed += [GENERATORS[backbone][0]] + (["templates/alpaca.json"] if backbone == "llama" else [])
    for name in needed:
        if not os.path.isfile(os.path.join(released_repo, name)):
            raise InputError(f"--released_repo: {released_repo} has no {name}; give a checkout of the original "
                             "repository")
    site = os.path.join(out, "site")
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(os.path.dirname(transformers.__file__), os.path.join(site, "transformers"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("trainer.py", "training_args.py"):
        shutil.copy(os.path.join(released_repo, name), os.path.join(site, "transformers", name))
    repo = os.path.join(out, "released")
    shutil.rmtree(repo, ignore_errors=True)
    for folder in ("src", "utils", "templates"):
        if os.path.isdir(os.path.join(released_repo, folder)):
            shutil.copytree(os.path.join(released_repo, folder), os.path.join(repo, folder))
    for name in (script, GENERATORS[backbone][0]):
        path = os.path.join(repo, name)
        with open(path, encoding="utf-8") as f:
            source = edit_released(name, f.read())
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
    data = os.path.join(out, "data")
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        os.makedirs(os.path.join(data, split), exist_ok=True)
        for task in tasks:
            for sfx in ("_T5", ""):
                src = os.path.join(data_dir, split, f"{task}{sfx}.json")
                if not os.path.isfile(src):
                    raise InputError(f"--data_dir: {src} not found")
                with open(src, encoding="utf-8") as f:
                    records = json.load(f)[:n]
                with open(os.path.join(data, split, f"{task}{sfx}.json"), "w", encoding="utf-8") as f:
                    json.dump(records, f)
    # the released generators read ./data_longsequence(_llama)/test from their working folder
    os.symlink(data, os.path.join(repo, GENERATORS[backbone][2]))
    if backbone == "t5":
        model = build_tiny_t5(os.path.join(out, "tiny_t5"), corpus_from_data_dir(data), vocab_size=512, d_model=64,
                              d_ff=128, num_heads=4, seed=seed)
    else:
        model = build_tiny_llama(os.path.join(out, "tiny_llama"), llama_corpus(data), vocab_size=512, seed=seed)
    return site, repo, data, model


def lora_tensors(folder):
    """LoRA tensors of a saved adapter, or of a full-model checkpoint (the released Trainer saves those)."""
    path = os.path.join(folder, "adapter_model.bin")
    if os.path.isfile(path):
        return load_plain(path)
    full = load_plain(os.path.join(folder, "pytorch_model.bin"))
    return {k.replace(".default", ""): v for k, v in full.items() if "lora_" in k}


def compare(a, b):
    x, y = lora_tensors(a), lora_tensors(b)
    if x.keys() != y.keys():
        return {"same_keys": False}
    diff = torch.cat([(x[k] - y[k]).flatten() for k in x])
    ref = torch.cat([x[k].flatten() for k in x])
    return {"same_keys": True, "tensors": len(x), "bitwise": all(torch.equal(x[k], y[k]) for k in x),
            "max_abs_diff": diff.abs().max().item(), "relative_l2": (diff.norm() / ref.norm()).item()}


def logged_losses(task_dir):
    checkpoints = sorted((d for d in os.listdir(task_dir) if d.startswith("checkpoint-")),
                         key=lambda d: int(d.split("-")[1]))
    if not checkpoints:
        return []
    with open(os.path.join(task_dir, checkpoints[-1], "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    return [(h["step"], h.get("loss"), h.get("eval_loss")) for h in history if "loss" in h or "eval_loss" in h]


def released_response(line):
    """(id, answer) of a released prediction line `id|||gold|||['answer</s>']`, as the released
    scorer reads the answer (</s> removed), stripped."""
    import ast

    parts = line.rstrip("\n").split("|||")
    return parts[0], ast.literal_eval(parts[-1])[0].replace("</s>", "").strip()


def compare_generation(backbone, repo, site, env, model, dataset_id, order_name, order, data, ours_out, cutoff):
    """The final adapter's OP predictions by the released generator and by ours."""
    released_script, our_script, _, cutoff_flag = GENERATORS[backbone]
    released_dir = prediction_dir(os.path.join(repo, "output"), model, "RKIF", order_name, "avgPerf")
    ours_dir = prediction_dir(ours_out, model, "RKIF", order_name, "avgPerf")
    shutil.rmtree(released_dir, ignore_errors=True)
    shutil.rmtree(ours_dir, ignore_errors=True)
    released_flags = ["--load_8bit", "False"] if backbone == "llama" else []
    for side, cmd, cwd, pythonpath in (
            ("released", [sys.executable, released_script, *released_flags, "--base_model", model, "--dataset_id",
                          str(dataset_id), "--method_name", "RKIF"], repo, f"{site}{os.pathsep}{repo}"),
            ("ours", [sys.executable, os.path.join(ROOT, our_script), "--base_model", model, "--dataset_id",
                      str(dataset_id), "--method_name", "RKIF", "--data_dir", data, "--output_path", ours_out,
                      "--gen_precision", "fp32", cutoff_flag, str(cutoff), "--gen_batch_size", "8"], ROOT, "")):
        p = subprocess.run(cmd, cwd=cwd, env={**env, "PYTHONPATH": pythonpath}, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"error: the {side} generator failed:\n{p.stderr[-3000:]}")
    if backbone == "llama":
        from rkif.causal import alpaca_prompt, load_tokenizer

        tokenizer = load_tokenizer(model)
        text = lambda r: alpaca_prompt(r["instruction"], r["input"])  # noqa: E731
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        text = lambda r: r["input"]  # noqa: E731
    rows = []
    for i, task in enumerate(order):
        with open(os.path.join(released_dir, f"{i}-{task}_result.txt"), encoding="utf-8") as f:
            released = dict(released_response(line) for line in f)
        with open(os.path.join(ours_dir, f"{i}-{task}.jsonl"), encoding="utf-8") as f:
            ours = {r["id"]: r["pred"].strip() for r in map(json.loads, f)}
        with open(os.path.join(data, "test", f"{task}{SCRIPTS[backbone][1]}.json"), encoding="utf-8") as f:
            tests = json.load(f)
        for r in tests:
            n = len(tokenizer(text(r))["input_ids"])
            rows.append({"task": task, "id": r["id"], "input_tokens": n, "over_cutoff": n > cutoff,
                         "released": released[r["id"]], "ours": ours[r["id"]],
                         "equal": released[r["id"]] == ours[r["id"]]})
    long = [r for r in rows if r["over_cutoff"]]
    summary = {"examples": len(rows), "equal": sum(r["equal"] for r in rows), "over_cutoff": len(long),
               "over_cutoff_equal": sum(r["equal"] for r in long), "rows": rows}
    print(f"OP predictions: {summary['equal']} of {len(rows)} equal; inputs over the training cutoff ({cutoff}): "
          f"{summary['over_cutoff_equal']} of {len(long)} equal")
    return summary


def main(released_repo, data_dir, backbone=PipelineSettings.backbone, dataset_id=RunSettings.dataset_id, tasks=4, out="output/compare_with_released",
         n_train=120, n_dev=40, n_test=8, num_epochs=3, memory_data_ratio=10, val_set_size=25, cutoff_len=256,
         max_input_length=256, seed=0):
    """backbone: t5 or llama. dataset_id: a released order (1-6). tasks: how many of its tasks to train
    (generation is compared when that is the whole order: the released generators read the last task's
    adapter). seed: the tiny model's. n_test: test examples per task. cutoff_len (llama) and
    max_input_length (t5): the training cutoff, also passed to both sides' training."""
    if backbone not in SCRIPTS:
        raise InputError(f"--backbone must be t5 or llama, got {backbone!r}")
    order_name, full_order = resolve_order(dataset_id)
    order = full_order[:tasks]
    out = os.path.abspath(out)
    site, repo, data, model = prepare(os.path.abspath(released_repo), data_dir, order, out, n_train, n_dev, seed,
                                      backbone, n_test)
    flags = ["--base_model", model, "--method_name", "RKIF", "--dataset_id", str(dataset_id), "--data_dir", data,
             "--cache_dir", os.path.join(out, "cache"), "--num_epochs", str(num_epochs),
             "--val_set_size", str(val_set_size), "--memory_data_ratio", str(memory_data_ratio),
             "--inner_iterations", "8", "--outer_iterations", "4", "--empty_inner_score_flag", "1",
             "--empty_outer_score_flag", "0", "--train_batch_size_outer", "8", "--batch_size", "8",
             "--micro_batch_size", "2", "--learning_rate", "3e-4"]
    if backbone == "llama":  # and as the released LLaMA grid: --group_by_length; LoRA alpha by default (32)
        flags += ["--cutoff_len", str(cutoff_len), "--group_by_length"]
        cutoff = cutoff_len
    else:
        flags += ["--max_input_length", str(max_input_length)]
        cutoff = max_input_length
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    # the released side trains into the folder its generator reads the adapters from
    outputs = {"released": os.path.join(repo, "checkpoint_files"), "ours": os.path.join(out, "out_ours")}
    for side in outputs:
        shutil.rmtree(outputs[side], ignore_errors=True)
    script = SCRIPTS[backbone][0]
    rows = []
    for t, task in enumerate(order):
        for side, (cmd, cwd, pythonpath) in {
            "released": ([sys.executable, script], repo, f"{site}{os.pathsep}{repo}"),
            "ours": ([sys.executable, os.path.join(ROOT, script)], ROOT, ""),
        }.items():
            p = subprocess.run([*cmd, *flags, "--task_id", str(t), "--output_path", outputs[side]], cwd=cwd,
                               env={**env, "PYTHONPATH": pythonpath}, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"error: the {side} script failed on task {t}-{task}:\n{p.stderr[-3000:]}")
        dirs = {s: adapter_dir(o, model, "RKIF", order_name, t, task) for s, o in outputs.items()}
        row = {"task": f"{t}-{task}", "final": compare(dirs["released"], dirs["ours"]),
               "losses_released": logged_losses(dirs["released"]), "losses_ours": logged_losses(dirs["ours"])}
        checkpoints = [d for d in os.listdir(dirs["ours"]) if d.startswith("checkpoint-")]
        row["checkpoints"] = {c: compare(os.path.join(dirs["released"], c), os.path.join(dirs["ours"], c))
                              for c in checkpoints if os.path.isdir(os.path.join(dirs["released"], c))}
        rows.append(row)
        f = row["final"]
        eval_diff = max((abs(a[2] - b[2]) for a, b in zip(row["losses_released"], row["losses_ours"])
                         if a[2] is not None and b[2] is not None), default=None)
        nan = float("nan")
        checkpoint_bitwise = all(c.get("bitwise") for c in row["checkpoints"].values())
        print(f"{row['task']:14s} bitwise {str(f.get('bitwise')):5s} max|diff| {f.get('max_abs_diff', nan):.3g}"
              f"  relative L2 {f.get('relative_l2', nan):.3g}  max eval-loss diff {eval_diff}"
              f"  checkpoints {sorted(row['checkpoints'])} bitwise {checkpoint_bitwise}")
    report = {"backbone": backbone, "order": order, "flags": flags, "tasks": rows}
    if order == full_order:
        report["generation"] = compare_generation(backbone, repo, site, env, model, dataset_id, order_name, order,
                                                  data, outputs["ours"], cutoff)
    else:
        print(f"generation not compared: the released generators need all {len(full_order)} tasks of the order")
    with open(os.path.join(out, "parity.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"written: {os.path.join(out, 'parity.json')}")


if __name__ == "__main__":
    run(main)
