"""A full disk while a checkpoint is written: one `error:` line naming the file, the cause and the
checkpoint a rerun resumes from; exit 2; nothing complete removed; the rerun ends bitwise where an
uninterrupted run ends. On a real small tmpfs where the test may mount one (root), else under a
file-size limit (RLIMIT_FSIZE)."""

import os
import resource
import shutil
import signal
import subprocess
import sys

from rkif.compat import save_adapter
import pytest
import torch

from conftest import cli_args
from rkif.checkpoints import checkpoint_folders, incomplete_reason

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "src", "finetune_KIF_t5lora.py")
PAGE = 4096


def train(args, preexec_fn=None):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          preexec_fn=preexec_fn)


def folder_pages(path):
    """Bytes a folder takes on tmpfs: whole pages per file."""
    return sum(-(-os.path.getsize(os.path.join(path, f)) // PAGE) * PAGE for f in os.listdir(path)) + PAGE


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


def adapter(out, tiny_t5):
    return torch.load(os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order", "0-weather",
                                   "adapter_model.bin"))


FLAGS = dict(val_set_size=0, eval_steps=2, num_epochs=3)


@pytest.fixture(scope="module")
def reference(tiny_t5, bench_dir, tmp_path_factory):
    """An uninterrupted run of the same task."""
    out = str(tmp_path_factory.mktemp("reference"))
    p = train(cli_args(tiny_t5, bench_dir, out, 0, **FLAGS))
    assert p.returncode == 0, p.stderr[-2000:]
    return out


@pytest.mark.parametrize("limit", ["tmpfs", "file_size"])
def test_full_disk_while_checkpointing(limit, reference, tiny_t5, bench_dir, tmp_path):
    flags = FLAGS
    task_ref = os.path.join(reference, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order", "0-weather")
    size = folder_pages(checkpoint_folders(task_ref)[-1])

    out = str(tmp_path / "small")
    task = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order", "0-weather")
    # room for two checkpoints and half a third (rotation removes the oldest only after the new one is complete)
    mounted = limit == "tmpfs" and mount_tmpfs(out, 2 * size + size // 2 + 4 * PAGE)
    if limit == "tmpfs" and not mounted:
        pytest.skip("mounting a tmpfs is not allowed here (the file_size case covers the same path)")
    try:
        if mounted:
            p = train(cli_args(tiny_t5, bench_dir, out, 0, **flags))
        else:  # no mount allowed: a file-size limit below the optimizer state's size fails the first checkpoint
            limit = os.path.getsize(os.path.join(checkpoint_folders(task_ref)[-1], "optimizer.pt")) // 2

            def limited():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not kills
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            p = train(cli_args(tiny_t5, bench_dir, out, 0, **flags), preexec_fn=limited)
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
        assert err[-1].startswith(f"error: writing {task}/checkpoint-"), p.stderr[-3000:]
        complete = [c for c in checkpoint_folders(task) if incomplete_reason(c) is None]
        partial = [c for c in checkpoint_folders(task) if incomplete_reason(c) is not None]
        assert len(partial) == 1 and f"{partial[0]} stays incomplete and will be skipped" in err[-1]
        assert "nothing complete was removed" in err[-1]
        if mounted:
            assert "failed: no space left on device." in err[-1]
            assert [os.path.basename(c) for c in complete] == ["checkpoint-2", "checkpoint-4"]
            assert f"A rerun resumes from {complete[-1]}, the newest complete checkpoint" in err[-1]
            subprocess.run(["mount", "-o", "remount,size=64m", out], check=True)
        else:
            assert f"failed: file too large (this process may write files of {limit} bytes at most)." in err[-1]
            assert complete == [], err[-1]
            assert "no complete checkpoint yet: a rerun starts the task at step 0" in err[-1]
        p = train(cli_args(tiny_t5, bench_dir, out, 0, resume_from_checkpoint="auto", **flags))
        assert p.returncode == 0, p.stderr[-2000:]
        if mounted:
            assert f"resuming task 0-weather from {complete[-1]}" in p.stdout
            assert f"skipping the incomplete {partial[0]}" in p.stderr
        ref, got = adapter(reference, tiny_t5), adapter(out, tiny_t5)
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    finally:
        if mounted:
            subprocess.run(["umount", out], check=False)
        shutil.rmtree(out, ignore_errors=True)


def test_full_disk_while_writing_predictions(tiny_t5, bench_dir, tmp_path):
    """Generation under a file-size limit: one `error:` line naming the file and what is kept, exit 2;
    a rerun with room finishes every prediction file."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from rkif.run_folders import adapter_dir

    out = str(tmp_path / "out")
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q", "v"], task_type=TaskType.SEQ_2_SEQ_LM))
    save_adapter(model, adapter_dir(out, tiny_t5, "RKIF", "order", 2, "food"))
    cmd = [sys.executable, os.path.join(ROOT, "src", "generate_avgPerf_t5lora.py"), f"--base_model={tiny_t5}",
           f"--dataset_id={os.path.join(bench_dir, 'order.json')}", f"--data_dir={bench_dir}", f"--output_path={out}",
           "--gen_batch_size=2", "--max_length=8", "--gen_precision=fp32"]

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))

    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, preexec_fn=limited)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert err[-1].startswith("error: writing ") and "failed: file too large." in err[-1], err[-1]
    assert "Finished prediction files are kept" in err[-1] and "a rerun continues from them" in err[-1]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    pred_dir = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order_avgPerf")
    assert sorted(f for f in os.listdir(pred_dir) if f.endswith(".jsonl")) == \
        ["0-weather.jsonl", "1-sport.jsonl", "2-food.jsonl"]
