"""Two processes with torchrun on CPU (gloo): the KIF state stays identical on every rank."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed beside this Python")
def test_two_ranks_fuse_identically_and_rank0_saves(tiny_t5, bench_dir, tmp_path):
    out, fusions = str(tmp_path / "out"), str(tmp_path / "fusions.jsonl")
    order = os.path.join(bench_dir, "order.json")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                        str(free_port()), os.path.join(ROOT, "tests", "ddp_worker.py"), tiny_t5, bench_dir, order, out,
                        fusions], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in open(fusions)]
    # task 1 only (task 0 has no memory): 24 examples / (2 ranks x 2 per rank x 2 accumulation) = 3 steps
    # per epoch, 2 epochs = 6 steps, a fusion every 2 steps
    assert [r[0][0] for r in rows] == [2, 4, 6]
    for (step0, digest0), (step1, digest1) in rows:
        assert step0 == step1 and digest0 == digest1  # bitwise identical LoRA weights after every fusion
    run = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order")
    info = json.load(open(os.path.join(run, "1-sport", "run_info.json")))
    assert info["world_size"] == 2 and info["gradient_accumulation_steps"] == 2
    assert info["effective_batch_size"] == 8 and info["kif"]["fusions"] == 3
    model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), os.path.join(run, "1-sport"))
    assert sum("lora_" in n for n, _ in model.named_parameters()) == 24
    ckpt = os.path.join(run, "1-sport", "checkpoint-6")
    assert os.path.isfile(os.path.join(ckpt, "kif_state_0.pt")) and os.path.isfile(os.path.join(ckpt, "kif_state_1.pt"))
    s0 = torch.load(os.path.join(ckpt, "kif_state_0.pt"), weights_only=False)
    s1 = torch.load(os.path.join(ckpt, "kif_state_1.pt"), weights_only=False)
    assert all(torch.equal(s0["anchor"][n], s1["anchor"][n]) for n in s0["anchor"])
    # each rank draws its own memory batches
    assert s0["kif_history"][0]["memory_indices"] != s1["kif_history"][0]["memory_indices"]
    shutil.rmtree(out)


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed beside this Python")
@pytest.mark.parametrize("method", ["EWC", "OLoRA"])
def test_penalty_methods_train_llama_with_checkpointing_on_two_ranks(method, tiny_llama, bench_dir, tmp_path):
    """A penalty on the LoRA weights, computed outside DDP's forward, on weights that also sit inside
    gradient-checkpointed blocks (LLaMA's default): task 1 must train on 2 ranks."""
    out = str(tmp_path / "out")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                        str(free_port()), os.path.join(ROOT, "tests", "ddp_train_worker.py"), "llama", method,
                        tiny_llama, bench_dir, os.path.join(bench_dir, "order.json"), out],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    info = json.load(open(os.path.join(out, f"{os.path.basename(tiny_llama)}lora_{method}_dataset_id_order", "1-sport",
                                       "run_info.json")))
    assert info["world_size"] == 2 and info["gradient_checkpointing"] is True
    assert info["global_steps"] > 0 and info["train_metrics"]["train_loss"] > 0
