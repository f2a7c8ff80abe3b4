"""Three tasks in sequence through the CLI, for each method, on a tiny T5 and the fixture benchmark."""

import json
import os

import pytest
import peft
import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM

from conftest import TASKS, cli_args
from rkif.compat import STACK, model_load_kwargs, optimizer_steps_per_epoch
from rkif.commands import entry_points
main = entry_points.train_t5

@pytest.fixture(scope="module")
def runs(tiny_t5, bench_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs"))
    for method in ("RKIF", "SeqLoRA", "Replay"):
        for t in range(3):
            main(cli_args(tiny_t5, bench_dir, out, t, method))
    return out

def task_dir(out, tiny_t5, method, t):
    model_name = os.path.basename(tiny_t5)
    return os.path.join(out, f"{model_name}lora_{method}_dataset_id_order", f"{t}-{TASKS[t]}")

@pytest.mark.parametrize("method", ["RKIF", "SeqLoRA", "Replay"])
def test_three_tasks_chain_real_adapters(runs, tiny_t5, method):
    previous = None
    for t in range(3):
        d = task_dir(runs, tiny_t5, method, t)
        weights = torch.load(os.path.join(d, "adapter_model.bin"))
        # r=8 LoRA on q and v of 2 encoder + 2 decoder layers (self and cross attention): 6 blocks x 2 x (A, B)
        assert len(weights) == 24 and all("lora_" in k for k in weights)
        model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), d)
        loaded = {k: v for k, v in model.named_parameters() if "lora_" in k}
        assert len(loaded) == 24
        if previous is not None:
            assert any(not torch.equal(weights[k], previous[k]) for k in weights)
        previous = weights
        info = json.load(open(os.path.join(d, "run_info.json")))
        assert info["task"] == TASKS[t] and info["settings"]["method_name"] == method
        assert info["effective_batch_size"] == 4 and info["world_size"] == 1
        assert info["versions"]["transformers"] == transformers.__version__
        assert info["versions"]["peft"] == peft.__version__
        assert info["wall_time_s"] > 0
        expected_prev = None if t == 0 else task_dir(runs, tiny_t5, method, t - 1)
        assert info["previous_adapter"] == expected_prev
        # 24 examples (+ memory for Replay), micro-batch 2 x accumulation 2, 2 epochs
        n_train = 24 + (6 * t if method == "Replay" else 0)
        assert info["num_train_examples"] == n_train
        assert info["global_steps"] == 2 * optimizer_steps_per_epoch(-(-n_train // 2), 2)
        fusions = info["kif"]["fusions"]
        if method == "RKIF" and t > 0:
            assert info["kif"]["memory_size"] == 6 * t
            assert fusions == info["global_steps"] // 2 and info["kif"]["outer_steps"] == 2 * fusions
        else:
            assert fusions == 0

def test_restored_adapter_is_the_best_checkpoint(runs, tiny_t5):
    for t in range(3):
        d = task_dir(runs, tiny_t5, "RKIF", t)
        info = json.load(open(os.path.join(d, "run_info.json")))
        best = info["best_model_checkpoint"]
        assert best and os.path.isdir(best)
        state = json.load(open(os.path.join(best, "trainer_state.json")))
        losses = [e["eval_loss"] for e in state["log_history"] if "eval_loss" in e]
        assert info["best_eval_loss"] == min(losses)
        final = torch.load(os.path.join(d, "adapter_model.bin"))
        at_best = torch.load(os.path.join(best, "adapter_model.bin"))
        assert final.keys() == at_best.keys()
        assert all(torch.equal(final[k], at_best[k]) for k in final)


def test_eval_loss_is_the_mean_over_batches_of_8_on_the_released_validation_set(runs, tiny_t5, bench_dir):
    """Task 1's validation set (8 dev examples of each task so far, ids computed here with numpy) scored
    by hand in batches of 8 with the restored best adapter equals the Trainer's best eval loss."""
    import numpy as np
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq

    from rkif.seq2seq import tokenize_seq2seq

    d = task_dir(runs, tiny_t5, "RKIF", 1)
    info = json.load(open(os.path.join(d, "run_info.json")))
    dev = [json.load(open(os.path.join(bench_dir, "dev", f"{t}_T5.json"))) for t in TASKS[:2]]
    firsts = [[task[k] for k in np.random.default_rng(42).permutation(len(task))[:25]] for task in dev]
    joined = firsts[0] + firsts[1]
    validation = [joined[k] for k in np.random.default_rng(42).permutation(len(joined))]
    assert len(validation) == 16 == info["num_validation_examples"]

    tok = AutoTokenizer.from_pretrained(tiny_t5)
    model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), d).eval()
    collate = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt", padding=True)
    features = tokenize_seq2seq(validation, tok, 1024, 128)

    def eval_loss(batch_size):
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(features), batch_size):
                batch = [dict(f) for f in features[i:i + batch_size]]
                total += model(**collate(batch)).loss.item() * len(batch)  # the Trainer weighs batch means
        return total / len(features)

    assert info["best_eval_loss"] == pytest.approx(eval_loss(8), abs=1e-5)
    # the batch size the Trainer evaluated with, as its checkpoints record it (the micro-batch is 2)
    checkpoint = info["best_model_checkpoint"]
    assert torch.load(os.path.join(checkpoint, "training_args.bin"), weights_only=False).per_device_eval_batch_size == 8


def test_base_model_loading_leaves_the_torch_rng_to_the_lora_initialisation(tiny_t5):
    """As the released device_map loading: the first draws after set_seed initialise the LoRA, not the base."""
    torch.manual_seed(42)
    before = torch.get_rng_state()
    fast = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5, **model_load_kwargs(skip_init=True))  # what the scripts do
    assert torch.equal(torch.get_rng_state(), before)
    plain = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    if STACK == "pinned":  # 4.28.1's default loading initialises, then overwrites; 5.x never initialises
        assert not torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
