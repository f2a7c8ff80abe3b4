"""EWC: the penalty, both Fisher estimates (per-example, independent of batching; per micro-batch),
the fp16 loss scale, and the running state saved beside each adapter."""

import contextlib
import os
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model

from rkif.adapters import lora_parameters
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from conftest import TASKS, cli_args
from rkif.commands import entry_points
from rkif.causal import load_tokenizer, tokenize_causal
from rkif.run_folders import adapter_dir
from rkif.methods import ewc
from rkif.seq2seq import tokenize_seq2seq

main = entry_points.train_t5


def run_cli(tiny_t5, bench_dir, out, method, tasks=(0, 1), **extra):
    for t in tasks:
        main(cli_args(tiny_t5, bench_dir, out, t, method, val_set_size=0, **extra))
    return [adapter_dir(out, tiny_t5, method, "order", t, TASKS[t]) for t in range(3)]


class Toy(torch.nn.Module):
    """loss = mean((w * x - y)^2) over a batch, named like a LoRA tensor."""

    def __init__(self, w):
        super().__init__()
        self.lora_A = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x, y):
        return SimpleNamespace(loss=((self.lora_A * x - y) ** 2).mean())


def test_ewc_fisher_and_penalty_by_hand():
    model = Toy([1.0, -2.0])
    batches = [{"x": torch.tensor([[1.0, 2.0]]), "y": torch.tensor([[0.0, 0.0]])},
               {"x": torch.tensor([[3.0, 1.0]]), "y": torch.tensor([[1.0, 1.0]])}]
    fisher = ewc.batch_fisher(model, batches, {"lora_A": model.lora_A})
    # d/dw mean_j (w_j x_j - y_j)^2 = (w_j x_j - y_j) x_j (the mean over 2 entries halves the 2)
    g1 = torch.tensor([(1 * 1 - 0) * 1, (-2 * 2 - 0) * 2])  # [1, -8]
    g2 = torch.tensor([(1 * 3 - 1) * 3, (-2 * 1 - 1) * 1])  # [6, -3]
    assert torch.allclose(fisher["lora_A"], (g1 ** 2 + g2 ** 2) / 2)  # [18.5, 36.5]
    theta_prev = {"lora_A": torch.tensor([0.5, -1.0])}
    penalty = ewc.ewc_penalty(model, fisher, theta_prev, ewc_lambda=4.0)
    # 4 / 2 * (18.5 * 0.5^2 + 36.5 * 1^2) = 2 * (4.625 + 36.5)
    assert penalty.item() == pytest.approx(2 * (18.5 * 0.25 + 36.5))
    penalty.backward()
    before = (model.lora_A.detach() - theta_prev["lora_A"]).abs()
    with torch.no_grad():
        model.lora_A -= 0.001 * model.lora_A.grad  # a step on the penalty alone moves toward theta_prev
    assert ((model.lora_A.detach() - theta_prev["lora_A"]).abs() < before).all()


def test_ewc_fisher_runs_in_the_training_context_and_undoes_the_loss_scale():
    """Under fp16 training the Fisher pass runs in the Trainer's autocast with the scaler's loss scale
    (small gradients would underflow unscaled), and the squared gradients come out unscaled."""
    model = Toy([1.0, -2.0])
    batches = [{"x": torch.tensor([[1.0, 2.0]]), "y": torch.tensor([[0.0, 0.0]])},
               {"x": torch.tensor([[3.0, 1.0]]), "y": torch.tensor([[1.0, 1.0]])}]
    entered = []

    @contextlib.contextmanager
    def autocast():
        entered.append(True)
        yield

    plain = ewc.batch_fisher(model, batches, {"lora_A": model.lora_A})
    scaled = ewc.batch_fisher(model, batches, {"lora_A": model.lora_A}, autocast, loss_scale=2.0 ** 16)
    assert len(entered) == 2 and torch.equal(scaled["lora_A"], plain["lora_A"])  # powers of two: exact
    overflow = ewc.batch_fisher(model, batches + [{"x": torch.tensor([[1e30, 1.0]]), "y": torch.zeros(1, 2)}],
                                   {"lora_A": model.lora_A}, autocast, loss_scale=2.0 ** 16)
    assert torch.equal(overflow["lora_A"], plain["lora_A"])  # the overflowing batch is left out


def test_ewc_saves_the_running_fisher_and_uses_it(tiny_t5, bench_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    dirs = run_cli(tiny_t5, bench_dir, out, "EWC", ewc_lambda=1000)
    s0 = torch.load(os.path.join(dirs[0], ewc.EWC_STATE), weights_only=False)
    s1 = torch.load(os.path.join(dirs[1], ewc.EWC_STATE), weights_only=False)
    saved1 = torch.load(os.path.join(dirs[1], "adapter_model.bin"))
    assert len(s0["fisher"]) == len(s0["theta_prev"]) == 24
    for name, f in s1["fisher"].items():  # running: task 1's Fisher adds to task 0's
        assert (f >= s0["fisher"][name]).all() and (f > s0["fisher"][name]).any()
    # theta_prev of task 1 is its saved adapter
    assert all(torch.equal(s1["theta_prev"][n], saved1[n.replace(".default", "")]) for n in s1["theta_prev"])
    assert s1["fisher_estimate"] == "per_example"
    # a running Fisher of one estimate is not continued with the other
    with pytest.raises(SystemExit) as e:
        main(cli_args(tiny_t5, bench_dir, out, 2, "EWC", val_set_size=0, ewc_fisher="batch"))
    assert e.value.code == 2 and "the running Fisher so far is the per_example estimate" in capsys.readouterr().err
    # without the state of the previous task, EWC refuses to start
    os.remove(os.path.join(dirs[1], ewc.EWC_STATE))
    with pytest.raises(SystemExit) as e:
        main(cli_args(tiny_t5, bench_dir, out, 2, "EWC", val_set_size=0))
    assert e.value.code == 2


def lora_model(model_class, base, targets, task_type, seed=0):
    """A LoRA model whose B is random too (peft starts it at zero: every gradient of A would vanish)."""
    model = get_peft_model(model_class.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                                         task_type=task_type, lora_dropout=0.1))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def chunks_of(features, collate, size):
    return [collate([dict(f) for f in features[i:i + size]]) for i in range(0, len(features), size)]


def one_at_a_time(model, features, collate, params):
    """The reference: each example through the model alone, its gradient squared, averaged."""
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for f in features:
        model.zero_grad()
        model(**collate([dict(f)])).loss.backward()
        for n, p in params.items():
            total[n] += p.grad ** 2
    model.zero_grad()
    return {n: t / len(features) for n, t in total.items()}


def t5_features(tiny_t5, bench_dir, n=10):
    from rkif.task_files import read_json

    tok = AutoTokenizer.from_pretrained(tiny_t5)
    records = read_json(os.path.join(bench_dir, "train", "weather_T5.json"))[:n]
    return tokenize_seq2seq(records, tok, 128, 16), DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, padding=True,
                                                                           return_tensors="pt")


def test_per_example_fisher_equals_one_example_at_a_time_for_any_chunk_size(tiny_t5, bench_dir):
    model = lora_model(AutoModelForSeq2SeqLM, tiny_t5, ["q", "v"], "SEQ_2_SEQ_LM")
    features, collate = t5_features(tiny_t5, bench_dir)
    assert len({len(f["input_ids"]) for f in features}) > 1  # chunks are padded
    params = lora_parameters(model)
    reference = one_at_a_time(model, features, collate, params)
    assert all(r.abs().sum() > 0 for r in reference.values())
    for size in (1, 2, 8):
        model.train()  # computed in eval mode (no dropout), then put back as found
        fisher = ewc.per_example_fisher(model, chunks_of(features, collate, size), params)
        assert model.training
        for n in params:
            torch.testing.assert_close(fisher[n], reference[n], rtol=1e-4, atol=1e-9)
    assert all(p.grad is None or not p.grad.any() for p in params.values())


def test_batch_fisher_scale_changes_with_the_micro_batch_while_per_example_does_not(tiny_t5, bench_dir):
    """The old estimate at micro-batch 1 is the per-example Fisher; at 8 its scale is much smaller
    (the per-example noise averages out before squaring): what ewc_lambda meant moved with it."""
    model = lora_model(AutoModelForSeq2SeqLM, tiny_t5, ["q", "v"], "SEQ_2_SEQ_LM")
    features, collate = t5_features(tiny_t5, bench_dir, n=16)
    params = lora_parameters(model)
    per_example = ewc.per_example_fisher(model, chunks_of(features, collate, ewc.FISHER_CHUNK), params)
    total = lambda f: sum(v.sum().item() for v in f.values())  # noqa: E731
    batch = {m: total(ewc.batch_fisher(model, chunks_of(features, collate, m), params)) for m in (1, 2, 8)}
    assert batch[1] == pytest.approx(total(per_example), rel=1e-4)
    assert batch[8] < batch[2] < batch[1]


def test_per_example_fisher_of_a_causal_lm_shifts_the_labels(tiny_llama, bench_dir):
    from rkif.task_files import read_json

    model = lora_model(AutoModelForCausalLM, tiny_llama, ["q_proj", "v_proj"], "CAUSAL_LM")
    tok = load_tokenizer(tiny_llama)
    records = read_json(os.path.join(bench_dir, "train", "sport.json"))[:5]
    features = tokenize_causal(records, tok, 64)
    collate = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, padding=True, return_tensors="pt")
    params = lora_parameters(model)
    reference = one_at_a_time(model, features, collate, params)
    fisher = ewc.per_example_fisher(model, chunks_of(features, collate, 1), params)
    for n in params:
        torch.testing.assert_close(fisher[n], reference[n], rtol=1e-4, atol=1e-9)


def test_per_example_fisher_refuses_a_parameter_that_is_not_a_lora_weight(tiny_t5):
    model = lora_model(AutoModelForSeq2SeqLM, tiny_t5, ["q", "v"], "SEQ_2_SEQ_LM")
    name, p = next((n, p) for n, p in model.named_parameters() if "layer_norm" in n)
    with pytest.raises(ValueError, match="bias-free Linear"):
        ewc.per_example_fisher(model, [], {name: p})


def test_per_example_fisher_undoes_the_loss_scale_and_backs_off_an_overflowing_one(tiny_t5, bench_dir, capsys):
    model = lora_model(AutoModelForSeq2SeqLM, tiny_t5, ["q", "v"], "SEQ_2_SEQ_LM")
    features, collate = t5_features(tiny_t5, bench_dir, n=4)
    params = lora_parameters(model)
    chunks = chunks_of(features, collate, 2)
    capsys.readouterr()  # the model's loading messages
    plain = ewc.per_example_fisher(model, chunks, params)
    scaled = ewc.per_example_fisher(model, chunks, params, loss_scale=2.0 ** 10)
    for n in params:
        torch.testing.assert_close(scaled[n], plain[n], rtol=1e-5, atol=1e-12)
    assert capsys.readouterr().err == ""
    # a scale so large that the scaled gradients overflow float32: redone at halved scales, none left out
    backed_off = ewc.per_example_fisher(model, chunks, params, loss_scale=3e38)
    for n in params:
        torch.testing.assert_close(backed_off[n], plain[n], rtol=1e-4, atol=1e-12)
    err = capsys.readouterr().err
    assert "overflowed at loss scale 3e+38; lowered to" in err and "left out" not in err


def largest_finite_training_scale(model, features, collate, params, micro_batch, accumulation, autocast):
    """The largest power-of-two loss scale at which training's backward (micro-batch mean loss divided by
    the accumulation steps, as the Trainer runs it) gives finite gradients: where the fp16 scaler settles."""
    def finite(scale):
        model.zero_grad()
        for i in range(0, micro_batch * accumulation, micro_batch):
            with autocast():
                loss = model(**collate([dict(f) for f in features[i:i + micro_batch]])).loss / accumulation
            (loss * scale).backward()
        return all(torch.isfinite(p.grad).all() for p in params.values())

    model.eval()  # no dropout: the same forward as the Fisher's
    exponent = max(k for k in range(64) if finite(2.0 ** k))
    model.zero_grad()
    return 2.0 ** exponent


def test_fp16_fisher_leaves_out_no_chunk_at_the_largest_scale_training_backs_through(tiny_t5, bench_dir, capsys):
    """CPU fp16 autocast: at the largest loss scale at which training's backward is finite, the Fisher
    that EWC's end_of_task computes overflows nowhere (no chunk redone or left out) and matches fp32's.
    Multiplying each example's loss by training's scale overflowed: every chunk left out, all zeros."""
    from rkif.methods import get_method
    from rkif.settings import EWCSettings, Settings

    model = lora_model(AutoModelForSeq2SeqLM, tiny_t5, ["q", "v"], "SEQ_2_SEQ_LM")
    features, collate = t5_features(tiny_t5, bench_dir, n=8)
    params = lora_parameters(model)
    micro_batch, accumulation = 4, 2

    def fp16():
        return torch.autocast("cpu", dtype=torch.float16)

    scale = largest_finite_training_scale(model, features, collate, params, micro_batch, accumulation, fp16)
    assert 2.0 ** 4 <= scale <= 2.0 ** 40
    reference = ewc.per_example_fisher(model, chunks_of(features, collate, 4), params)  # fp32
    trainer = SimpleNamespace(model=model, data_collator=collate, _prepare_inputs=lambda b: b, do_grad_scaling=True,
                              scaler=torch.amp.GradScaler("cpu", init_scale=scale),
                              args=SimpleNamespace(gradient_accumulation_steps=accumulation),
                              compute_loss_context_manager=fp16)
    trainer.accelerator = SimpleNamespace(scaler=trainer.scaler)
    capsys.readouterr()
    path = os.path.join(os.path.dirname(tiny_t5), "ewc_state_fp16.pt")
    get_method("EWC").end_of_task(trainer, SimpleNamespace(previous_adapter=None), features, micro_batch,
                                  Settings([EWCSettings(ewc_fisher="per_example")]))[ewc.EWC_STATE](path)
    assert capsys.readouterr().err == ""  # no overflow, nothing left out
    fisher = torch.load(path)["fisher"]
    for n in params:
        assert fisher[n].abs().max() > 0
        # fp16 rounding of the activations: within 10% of the largest entry
        assert (fisher[n] - reference[n]).abs().max() <= 0.1 * reference[n].abs().max(), n


def test_ewc_state_is_the_same_for_micro_batch_sizes_1_2_and_8(tiny_t5, bench_dir, monkeypatch):
    """EWC's end_of_task: under the default estimate the saved Fisher is the same whether examples pass
    one, two or eight at a time (the chunk set to the micro-batch), unlike the batch estimate's."""
    from rkif.methods import get_method
    from rkif.settings import EWCSettings, Settings

    model = lora_model(AutoModelForSeq2SeqLM, tiny_t5, ["q", "v"], "SEQ_2_SEQ_LM")
    features, collate = t5_features(tiny_t5, bench_dir, n=12)
    trainer = SimpleNamespace(model=model, data_collator=collate, _prepare_inputs=lambda b: b, do_grad_scaling=False,
                              accelerator=SimpleNamespace(scaler=None),
                              compute_loss_context_manager=contextlib.nullcontext)
    plan = SimpleNamespace(previous_adapter=None)

    def saved_fisher(micro_batch_size, estimate, path):
        files = get_method("EWC").end_of_task(trainer, plan, features, micro_batch_size,
                                              Settings([EWCSettings(ewc_fisher=estimate)]))
        files[ewc.EWC_STATE](path)
        return torch.load(path)["fisher"]

    tmp = os.path.join(os.path.dirname(tiny_t5), "ewc_state_check.pt")
    per_example = []
    for m in (1, 2, 8):
        monkeypatch.setattr(ewc, "FISHER_CHUNK", m)
        per_example.append(saved_fisher(m, "per_example", tmp))
    batch = [saved_fisher(m, "batch", tmp) for m in (1, 8)]
    for n in per_example[0]:
        for other in per_example[1:]:
            torch.testing.assert_close(other[n], per_example[0][n], rtol=1e-4, atol=1e-12)
        torch.testing.assert_close(batch[0][n], per_example[0][n], rtol=1e-4, atol=1e-9)
    assert sum(v.sum() for v in batch[1].values()) < sum(v.sum() for v in per_example[0].values())


def test_the_backoff_follows_fp16_not_the_value_of_the_scale():
    """Under fp16 the shared scale can be exactly 1.0 (scaler 128, micro-batch 4 x accumulation 32): an overflow
    there is still backed off. In fp32 nothing is retried."""
    calls = []

    def grads_at(scale):
        calls.append(scale)
        return {"w": torch.tensor([float("inf")]) if scale > 0.25 else torch.tensor([1.0])}

    grads, scale, halvings = ewc._scaled_backward(grads_at, ewc.fisher_loss_scale(128.0, 4, 32), fp16=True)
    assert scale == 0.25 and halvings == 2 and calls == [1.0, 0.5, 0.25] and torch.equal(grads["w"], torch.ones(1))
    calls.clear()
    assert ewc._scaled_backward(grads_at, 1.0, fp16=False) == (None, 1.0, 0) and calls == [1.0]
