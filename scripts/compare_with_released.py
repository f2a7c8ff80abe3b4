"""Seed-level parity with the released scripts: the same tasks trained by both, adapters compared.

    .venv/bin/python scripts/compare_with_released.py --released_repo PATH --data_dir DIR [--tasks 4]

PATH is a checkout of the original repository (src/, utils/, trainer.py, training_args.py);
nothing of it is copied into this project. In a scratch folder (--out) this builds a copy of
the installed transformers with the released trainer.py and training_args.py, a copy of the
released src/ and utils/ with the one block that must go under peft 0.4.0 (the state_dict
override that empties every saved adapter), a subsample of the order's data and a tiny T5,
then trains the order's first --tasks tasks with the released finetune_KIF_t5lora.py and with
ours, same flags and seed, on CPU, and compares each task's final and checkpoint adapters and
logged losses. Prints a table and writes {out}/parity.json.
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
sys.path.insert(0, os.path.join(ROOT, "src"))

from rkif.errors import InputError  # noqa: E402
from rkif.flags import run  # noqa: E402
from rkif.tasks import resolve_order  # noqa: E402

STATE_DICT_OVERRIDE = re.compile(r"\n[ \t]*old_state_dict = model\.state_dict\n.*?\.__get__\(model, type\(model\)\)\n",
                                 re.S)


def strip_state_dict_override(source):
    """The released script without its `model.state_dict = ...get_peft_model_state_dict...` block."""
    stripped, n = STATE_DICT_OVERRIDE.subn("\n", source)
    if n != 1:
        raise InputError("the released finetune_KIF_t5lora.py: expected exactly one `old_state_dict = "
                         f"model.state_dict ... .__get__(model, type(model))` block, found {n}")
    return stripped


def prepare(released_repo, data_dir, tasks, out, n_train, n_dev, seed):
    import transformers

    from rkif.tiny import build_tiny_t5, corpus_from_data_dir

    for name in ("trainer.py", "training_args.py", "src/finetune_KIF_t5lora.py", "utils/load_data.py"):
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
    script = os.path.join(repo, "src", "finetune_KIF_t5lora.py")
    with open(script, encoding="utf-8") as f:
        source = strip_state_dict_override(f.read())
    with open(script, "w", encoding="utf-8") as f:
        f.write(source)
    data = os.path.join(out, "data")
    for split, n in (("train", n_train), ("dev", n_dev), ("test", 1)):
        os.makedirs(os.path.join(data, split), exist_ok=True)
        for task in tasks:
            for suffix in ("_T5", ""):
                src = os.path.join(data_dir, split, f"{task}{suffix}.json")
                if not os.path.isfile(src):
                    raise InputError(f"--data_dir: {src} not found")
                with open(src, encoding="utf-8") as f:
                    records = json.load(f)[:n]
                with open(os.path.join(data, split, f"{task}{suffix}.json"), "w", encoding="utf-8") as f:
                    json.dump(records, f)
    model = build_tiny_t5(os.path.join(out, "tiny_t5"), corpus_from_data_dir(data), vocab_size=512, d_model=64,
                          d_ff=128, num_heads=4, seed=seed)
    return site, repo, data, model


def lora_tensors(folder):
    """LoRA tensors of a saved adapter, or of a full-model checkpoint (the released Trainer saves those)."""
    path = os.path.join(folder, "adapter_model.bin")
    if os.path.isfile(path):
        return torch.load(path, map_location="cpu")
    full = torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="cpu")
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


def main(released_repo, data_dir, dataset_id=4, tasks=4, out="output/compare_with_released", n_train=120, n_dev=40,
         num_epochs=3, memory_data_ratio=10, val_set_size=25, seed=0):
    """dataset_id: a released order (1-6). tasks: how many of its tasks to train. seed: the tiny model's."""
    order_name, order = resolve_order(dataset_id)
    order = order[:tasks]
    site, repo, data, model = prepare(os.path.abspath(released_repo), data_dir, order, os.path.abspath(out),
                                      n_train, n_dev, seed)
    flags = ["--base_model", model, "--method_name", "RKIF", "--dataset_id", str(dataset_id), "--data_dir", data,
             "--cache_dir", os.path.join(os.path.abspath(out), "cache"), "--num_epochs", str(num_epochs),
             "--val_set_size", str(val_set_size), "--memory_data_ratio", str(memory_data_ratio),
             "--inner_iterations", "8", "--outer_iterations", "4", "--empty_inner_score_flag", "1",
             "--empty_outer_score_flag", "0", "--train_batch_size_outer", "8", "--batch_size", "8",
             "--micro_batch_size", "2", "--learning_rate", "3e-4"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    outputs = {side: os.path.join(os.path.abspath(out), f"out_{side}") for side in ("released", "ours")}
    for side in outputs:
        shutil.rmtree(outputs[side], ignore_errors=True)
    rows = []
    for t, task in enumerate(order):
        for side, (cmd, cwd, pythonpath) in {
            "released": ([sys.executable, "src/finetune_KIF_t5lora.py"], repo, f"{site}{os.pathsep}{repo}"),
            "ours": ([sys.executable, os.path.join(ROOT, "src", "finetune_KIF_t5lora.py")], ROOT, ""),
        }.items():
            p = subprocess.run([*cmd, *flags, "--task_id", str(t), "--output_path", outputs[side]], cwd=cwd,
                               env={**env, "PYTHONPATH": pythonpath}, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"error: the {side} script failed on task {t}-{task}:\n{p.stderr[-3000:]}")
        dirs = {s: os.path.join(o, f"{os.path.basename(model)}lora_RKIF_dataset_id_{order_name}", f"{t}-{task}")
                for s, o in outputs.items()}
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
        print(f"{row['task']:14s} bitwise {str(f.get('bitwise')):5s} max|diff| {f.get('max_abs_diff', nan):.3g}"
              f"  relative L2 {f.get('relative_l2', nan):.3g}  max eval-loss diff {eval_diff}")
    with open(os.path.join(out, "parity.json"), "w") as fh:
        json.dump({"order": order, "flags": flags, "tasks": rows}, fh, indent=2)
    print(f"written: {os.path.join(out, 'parity.json')}")


if __name__ == "__main__":
    run(main)
