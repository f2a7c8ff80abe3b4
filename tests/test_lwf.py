"""LwF: the distillation term against a direct KL computation, the teacher swapped in and out bit for bit
with the gradient of the student unchanged, and whole runs on both backbones."""

import json
import os

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from conftest import TASKS, cli_args
from rkif.commands import entry_points
from rkif.methods import get_method, lwf
from rkif.run_folders import adapter_dir
from rkif.seq2seq import tokenize_seq2seq
from rkif.settings import LwFSettings, Settings
from rkif.task_plan import plan_task
from rkif.training import LoRAShape

main = entry_points.train_t5


def test_the_distillation_term_is_the_kl_over_the_label_tokens_by_hand():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    labels = torch.tensor([[4, 1, -100], [2, -100, -100]])
    T = 2.0
    got = lwf.distillation_loss(student, teacher, lwf.label_token_mask(labels, encoder_decoder=True), T)
    terms = []
    for b, i in ((0, 0), (0, 1), (1, 0)):  # the label tokens
        p, q = torch.softmax(teacher[b, i].double() / T, -1), torch.softmax(student[b, i].double() / T, -1)
        terms.append(sum(p[k] * (torch.log(p[k]) - torch.log(q[k])) for k in range(5)))
    assert got.item() == pytest.approx(T * T * sum(terms).item() / 3, rel=1e-6)
    # the teacher is the student: exactly zero
    same = lwf.distillation_loss(student, student.clone(), lwf.label_token_mask(labels, True), T)
    assert same.item() == 0.0
    # no label token in the batch: zero, still part of the graph
    student.requires_grad_(True)
    none = lwf.distillation_loss(student, teacher, torch.zeros(2, 3, dtype=torch.bool), T)
    assert none.item() == 0.0 and none.requires_grad


def test_a_causal_lm_predicts_each_label_from_the_position_before():
    labels = torch.tensor([[-100, -100, 7, 8, 2]])
    assert lwf.label_token_mask(labels, encoder_decoder=False).tolist() == [[False, True, True, True, False]]
    assert lwf.label_token_mask(labels, encoder_decoder=True).tolist() == [[False, False, True, True, True]]


def test_the_teacher_is_the_previous_adapter_swapped_in_and_out(tiny_t5, bench_dir, tmp_path):
    """The term's teacher logits are those of the previous adapter loaded on its own; the student's weights
    come back bit for bit; the gradient is that of the task loss plus the KL to those fixed teacher logits."""
    out = str(tmp_path / "out")
    main(cli_args(tiny_t5, bench_dir, out, 0, "LwF", val_set_size=0))
    previous = adapter_dir(out, tiny_t5, "LwF", "order", 0, TASKS[0])
    plan = plan_task(method_name="LwF", dataset_id=os.path.join(bench_dir, "order.json"), task_id=1,
                     data_dir=bench_dir, output_path=out, base_model=tiny_t5, memory_data_ratio=25, val_set_size=0,
                     seed=42)
    settings = Settings([LwFSettings(lwf_lambda=0.7, lwf_temperature=2.0)])
    model, extra_loss = get_method("LwF").build(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), plan,
                                                LoRAShape(8, 32, 0.05, ["q", "v"], "SEQ_2_SEQ_LM"), settings)
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    collate = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, padding=True, return_tensors="pt")
    batch = collate(tokenize_seq2seq(plan.train[:4], tok, 128, 16))

    model.eval()  # no dropout: the student is the teacher before any step
    outputs = model(**batch)
    assert extra_loss(model, batch, outputs).item() == 0.0

    with torch.no_grad():  # a training step's worth of change
        for n, p in model.named_parameters():
            if "lora_" in n and p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    model.train()
    torch.manual_seed(3)
    outputs = model(**batch)
    term = extra_loss(model, batch, outputs)
    assert model.training  # the teacher's eval-mode forward leaves training mode as it was
    (outputs.loss + term).backward()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_" in n)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    teacher_model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), previous).eval()
    with torch.no_grad():
        teacher_logits = teacher_model(**batch).logits
    mask = batch["labels"] != -100
    model.zero_grad()
    torch.manual_seed(3)  # the same dropout draws: the teacher's forward took none
    outputs = model(**batch)
    reference = outputs.loss + 0.7 * lwf.distillation_loss(outputs.logits, teacher_logits, mask, 2.0)
    assert term.item() == pytest.approx(0.7 * lwf.distillation_loss(outputs.logits, teacher_logits, mask,
                                                                    2.0).item(), rel=1e-5)
    reference.backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, rtol=1e-4, atol=1e-7), n


def test_lwf_with_weight_zero_trains_exactly_as_seqlora(tiny_t5, bench_dir, tmp_path):
    """The swap and the teacher's forward change nothing but the term: weight 0 gives SeqLoRA's adapters."""
    for method, extra in (("SeqLoRA", {}), ("LwF", {"lwf_lambda": 0.0})):
        for t in (0, 1):
            main(cli_args(tiny_t5, bench_dir, str(tmp_path / method), t, method, val_set_size=0, **extra))
    seq = torch.load(os.path.join(adapter_dir(str(tmp_path / "SeqLoRA"), tiny_t5, "SeqLoRA", "order", 1, TASKS[1]),
                                  "adapter_model.bin"))
    lwf_zero = torch.load(os.path.join(adapter_dir(str(tmp_path / "LwF"), tiny_t5, "LwF", "order", 1, TASKS[1]),
                                       "adapter_model.bin"))
    assert seq.keys() == lwf_zero.keys() and all(torch.equal(seq[k], lwf_zero[k]) for k in seq)


def test_lwf_and_tasl_run_the_llama_pipeline_and_their_flags_are_checked(tiny_llama, bench_dir, tmp_path, capsys):
    from rkif.pipeline import run_order

    out = str(tmp_path / "out")
    summary = run_order(backbone="llama", base_model=tiny_llama, dataset_id=os.path.join(bench_dir, "order.json"),
                        methods="LwF,TaSL", data_dir=bench_dir, output_path=out, matrix=True, num_epochs=1, batch_size=4,
                        micro_batch_size=2, val_set_size=0, logging_steps=100, max_new_tokens=8, gen_batch_size=8,
                        lwf_temperature=1.5)
    assert all(len(summary[m]["R"]) == 3 and summary[m]["BWT"] is not None for m in ("LwF", "TaSL"))
    info = json.load(open(os.path.join(adapter_dir(out, tiny_llama, "LwF", "order", 2, TASKS[2]), "run_info.json")))
    assert info["settings"]["lwf_temperature"] == 1.5 and info["settings"]["lwf_lambda"] == LwFSettings.lwf_lambda
    for method, flag, value, message in (("LwF", "lwf_temperature", 0, "--lwf_temperature: must be > 0, got 0"),
                                         ("LwF", "lwf_lambda", -1.0, "--lwf_lambda: must be >= 0, got -1.0"),
                                         ("TaSL", "tasl_temperature", -0.5, "--tasl_temperature: must be > 0, got -0.5")):
        with pytest.raises(SystemExit):
            entry_points.train_llama(cli_args(tiny_llama, bench_dir, str(tmp_path / "bad"), 0, method, **{flag: value}))
        assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")
