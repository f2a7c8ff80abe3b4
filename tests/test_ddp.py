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
    # every rank draws the same outer batch (and runs its half of it)
    assert s0["kif_history"][0]["memory_indices"] == s1["kif_history"][0]["memory_indices"]
    assert len(s0["kif_history"][0]["memory_indices"][0]) == 4
    shutil.rmtree(out)


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed beside this Python")
@pytest.mark.parametrize("backbone", ["t5", "llama"])
def test_every_method_trains_tasks_0_and_1_on_two_ranks(backbone, tiny_t5, tiny_llama, bench_dir, tmp_path):
    """Every method on 2 gloo ranks, tasks 0 and 1 (MTL: its one task), LLaMA with its default gradient
    checkpointing. EWC's and OLoRA's penalty on the LoRA weights is computed outside DDP's forward, on weights
    that also sit inside checkpointed blocks: with reentrant checkpointing task 1 stopped at its first
    synchronised backward ("Expected to mark a variable ready only once")."""
    from rkif.methods import METHOD_NAMES, get_method

    model = tiny_t5 if backbone == "t5" else tiny_llama
    out = str(tmp_path / "out")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                        str(free_port()), os.path.join(ROOT, "tests", "ddp_train_worker.py"), backbone,
                        ",".join(METHOD_NAMES), model, bench_dir, os.path.join(bench_dir, "order.json"), out],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    for method in METHOD_NAMES:
        task = ["0-weather", "1-sport", "2-food"][get_method(method).trained_task_ids(3)[:2][-1]]
        info = json.load(open(os.path.join(out, f"{os.path.basename(model)}lora_{method}_dataset_id_order", task,
                                           "run_info.json")))
        assert info["world_size"] == 2 and info["gradient_checkpointing"] is (backbone == "llama"), method
        assert info["global_steps"] > 0 and info["train_metrics"]["train_loss"] > 0, method


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed beside this Python")
def test_the_outer_loop_on_two_ranks_is_the_outer_loop_on_one(tiny_t5, bench_dir, tmp_path):
    """Same memory, same adapter, the same memory batches drawn: the outer update, the outer importance
    (which sees the gradient's scale, unlike Adam's update) and the outer losses of 2 gloo ranks are one
    process's, up to float rounding. (Before: each rank drew its own batch, and its loss was divided by
    its own accumulation, so the outer gradient was W times one process's.)"""
    import json as _json

    from conftest import random_lora_adapter

    model = str(tmp_path / "tiny_t5_no_dropout")
    shutil.copytree(tiny_t5, model)
    config = _json.load(open(os.path.join(model, "config.json")))
    _json.dump({**config, "dropout_rate": 0.0}, open(os.path.join(model, "config.json"), "w"))
    random_lora_adapter(AutoModelForSeq2SeqLM, model, tmp_path / "adapter", ["q", "v"], "SEQ_2_SEQ_LM", 0.05)
    memory = os.path.join(bench_dir, "train", "weather_T5.json")
    worker = os.path.join(ROOT, "tests", "ddp_outer_worker.py")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    p = subprocess.run([sys.executable, worker, model, str(tmp_path / "adapter"), memory, one], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                        str(free_port()), worker, model, str(tmp_path / "adapter"), memory, two], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = torch.load(one, weights_only=False), torch.load(two, weights_only=False)
    assert a["memory_indices"] == b["memory_indices"] and len(a["memory_indices"]) == 3
    assert all(len(i) == 4 for i in a["memory_indices"])
    for n in a["delta_out"]:
        assert torch.count_nonzero(a["delta_in"][n]) == 0  # the inner loop moved nothing
        torch.testing.assert_close(b["delta_out"][n], a["delta_out"][n], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(b["outer_sensitivity"][n], a["outer_sensitivity"][n], rtol=1e-4, atol=1e-10)
    assert a["outer_losses"] == pytest.approx(b["outer_losses"], rel=1e-5)


def test_a_script_leaves_its_process_group_before_it_exits(tmp_path):
    """The scripts' runner destroys the process group once the command has returned (a rank left to the
    interpreter's exit could abort after its work was done, and torchrun report the job failed)."""
    code = ("import sys, torch.distributed as dist; from rkif.cli_runner import leave_process_group, run; "
            f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1); "
            "run(lambda x=1: print('ran', dist.is_initialized()), ['--x', '2']); print('after', dist.is_initialized())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["ran", "True", "after", "False"]
