"""TaSL: the consolidation by hand on a 2-module, rank-2 adapter, the importance against a direct computation
of its release's formula, and a sequence whose interruption between training and consolidation reruns the
consolidation only."""

import math
import os

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from conftest import TASKS, cli_args
from rkif.commands import entry_points
from rkif.methods import tasl
from rkif.run_folders import adapter_dir
from rkif.seq2seq import tokenize_seq2seq
from rkif.task_files import read_json

main = entry_points.train_t5


def test_consolidation_by_hand_on_two_modules_of_rank_two():
    present = {"m1.": torch.tensor([1.0, 3.0]), "m2.": torch.tensor([2.0, 5.0])}  # min 1, max 5
    accumulated = {"m1.": torch.tensor([0.2, 0.6]), "m2.": torch.tensor([1.0, 0.2])}  # min 0.2, max 1
    # normalised: P m1 [0, 0.5], m2 [0.25, 1]; Q m1 [0, 0.5], m2 [1, 0]
    # c_t = e^(P/tau) / (e^(P/tau) + e^(Q/tau)) = 1 / (1 + e^((Q - P) / tau)), tau 0.25
    c = {"m1.": [0.5, 0.5], "m2.": [1 / (1 + math.exp(3.0)), 1 / (1 + math.exp(-4.0))]}
    ones, twos = torch.ones(2, 3), torch.full((4, 2), 2.0)
    trained = {k: (ones.clone(), twos.clone()) for k in present}
    previous = {k: (-torch.ones(2, 3), torch.zeros(4, 2)) for k in present}
    weights, coefficients, mixed = tasl.consolidate(present, accumulated, trained, previous, temperature=0.25)
    for key in present:
        assert coefficients[key].tolist() == pytest.approx(c[key], rel=1e-6)
        a, b = weights[key]
        for r in range(2):  # row r of A and column r of B take unit r's coefficients
            assert a[r].tolist() == pytest.approx([c[key][r] * 1 + (1 - c[key][r]) * -1] * 3, rel=1e-6, abs=1e-6)
            assert b[:, r].tolist() == pytest.approx([c[key][r] * 2] * 4, rel=1e-6)
    # 0.3 P + 0.7 Q = m1 [0, 0.5], m2 [0.775, 0.3], normalised by its max 0.775
    assert mixed["m1."].tolist() == pytest.approx([0.0, 0.5 / 0.775], rel=1e-6)
    assert mixed["m2."].tolist() == pytest.approx([1.0, 0.3 / 0.775], rel=1e-6)


def test_a_unit_is_a_row_of_a_with_a_column_of_b_and_a_flat_table_normalises_to_zeros():
    s_a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 2.0]])  # rank 2 x in 3: row means 2, 2
    s_b = torch.tensor([[1.0, 0.0], [3.0, 6.0]])  # out 2 x rank 2: column means 2, 3
    table = tasl.unit_importance({"x.q.lora_A.default.weight": s_a, "x.q.lora_B.default.weight": s_b})
    assert list(table) == ["x.q."] and table["x.q."].tolist() == [4.0, 6.0]
    assert tasl.min_max({"a": torch.tensor([2.0, 2.0])})["a"].tolist() == [0.0, 0.0]
    with pytest.raises(Exception, match="different LoRA modules"):
        tasl.consolidate({"a.": torch.ones(2)}, {"b.": torch.ones(2)}, {}, {"a.": None}, 0.25)


def test_importance_is_the_release_formula_computed_directly(tiny_t5, bench_dir):
    """Four optimizer steps on a tiny T5: after each step but the first, on the updated weights and the step's
    gradients, s = |w g - (w g)^2 / 2|, EMAs at 0.85, score I x U; a unit's, the mean of B's column times the
    mean of A's row. Computed here in float64, one entry at a time in the formula's own terms."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM"))
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    collate = DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt")
    records = read_json(os.path.join(bench_dir, "train", f"{TASKS[0]}_T5.json"))[:16]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = tasl.SkillImportance(0.85, 0.85)
    i_bar, u_bar = {}, {}
    for step in range(4):
        batch = collate(tokenize_seq2seq(records[4 * step:4 * step + 4], tok, 64, 8))
        model(**batch).loss.backward()
        optimizer.step()
        tracker.update(model, step)
        if step > 0:
            for n, p in model.named_parameters():
                if "lora_" in n:
                    wg = p.detach().double() * p.grad.double()
                    s = (wg - 0.5 * wg * wg).abs()
                    i_bar[n] = 0.85 * i_bar.get(n, 0) + 0.15 * s
                    u_bar[n] = 0.85 * u_bar.get(n, 0) + 0.15 * (s - i_bar[n]).abs()
        optimizer.zero_grad()
    table = tracker.table()
    assert tracker.tracker.num_updates == 3 and len(table) == 12
    for n in i_bar:
        if "lora_A" in n:
            key, b = n.split("lora_A")[0], n.replace("lora_A", "lora_B")
            score_a, score_b = i_bar[n] * u_bar[n], i_bar[b] * u_bar[b]
            expected = score_b.mean(dim=0) * score_a.mean(dim=1)
            assert torch.allclose(table[key].double(), expected, rtol=1e-4, atol=0), key
            assert expected.abs().sum() > 0


def tasl_run(tiny_t5, bench_dir, out, tasks=(0, 1, 2), **extra):
    for t in tasks:
        main(cli_args(tiny_t5, bench_dir, out, t, "TaSL", val_set_size=0, **extra))
    return [adapter_dir(out, tiny_t5, "TaSL", "order", t, TASKS[t]) for t in range(3)]


# 24 training examples in batches of 4: 6 optimizer steps per epoch, so the last step, 9, falls mid-epoch
MID_EPOCH = {"max_steps": 9}


def test_the_saved_adapter_is_the_consolidation_of_the_trained_one_with_the_previous(tiny_t5, bench_dir, tmp_path,
                                                                                    monkeypatch):
    from rkif.plain_data import load_plain

    seen = {}
    original = tasl.TaSL.end_of_task

    def recording(self, trainer, plan, *args, **kwargs):
        seen["trained"] = {k: (a.detach().clone(), b.detach().clone())
                           for k, (a, b) in tasl.lora_pairs(trainer.model.named_parameters()).items()}
        seen["present"] = trainer.step_tracker.table()
        seen["updates"] = trainer.step_tracker.tracker.num_updates
        return original(self, trainer, plan, *args, **kwargs)

    monkeypatch.setattr(tasl.TaSL, "end_of_task", recording)
    folders = tasl_run(tiny_t5, bench_dir, str(tmp_path / "out"), tasks=(0, 1), **MID_EPOCH)
    assert seen["updates"] == MID_EPOCH["max_steps"] - 1  # every step but the first
    first = load_plain(os.path.join(folders[0], tasl.TASL_STATE))
    assert all(torch.equal(first["present"][k], first["accumulated"][k]) for k in first["present"])
    expected, coefficients, accumulated = tasl.consolidate(
        seen["present"], first["accumulated"], seen["trained"],
        tasl.lora_pairs(load_plain(os.path.join(folders[0], "adapter_model.bin")).items()), 0.25)
    saved = tasl.lora_pairs(load_plain(os.path.join(folders[1], "adapter_model.bin")).items())
    assert saved.keys() == expected.keys() and len(saved) == 12
    for key, (a, b) in saved.items():
        assert torch.equal(a, expected[key][0]) and torch.equal(b, expected[key][1]), key
    c = torch.cat(list(coefficients.values()))
    assert 0 < c.min() < c.max() < 1 and (c - 0.5).abs().max() > 0.1  # a real mix, unit by unit
    assert any(not torch.equal(a, seen["trained"][k][0]) for k, (a, _) in saved.items())
    second = load_plain(os.path.join(folders[1], tasl.TASL_STATE))
    assert all(torch.equal(second["accumulated"][k], accumulated[k]) for k in accumulated)
    assert min(v.min() for v in accumulated.values()) == 0 and max(v.max() for v in accumulated.values()) == 1


def test_an_interruption_between_training_and_consolidation_reruns_the_consolidation_only(
        tiny_t5, bench_dir, tmp_path, monkeypatch, capsys):
    """Stopped after its last step (mid-epoch) and before the consolidation, task 1 resumes from the last step's
    checkpoint, trains nothing, and saves what the uninterrupted run saves, bit for bit."""
    from rkif.plain_data import load_plain

    whole = tasl_run(tiny_t5, bench_dir, str(tmp_path / "whole"), tasks=(0, 1), **MID_EPOCH)
    out = str(tmp_path / "cut")
    tasl_run(tiny_t5, bench_dir, out, tasks=(0,), **MID_EPOCH)
    original = tasl.TaSL.end_of_task

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tasl.TaSL, "end_of_task", stop)
    with pytest.raises(KeyboardInterrupt):
        main(cli_args(tiny_t5, bench_dir, out, 1, "TaSL", val_set_size=0, **MID_EPOCH))
    cut = adapter_dir(out, tiny_t5, "TaSL", "order", 1, TASKS[1])
    assert not os.path.exists(os.path.join(cut, "adapter_model.bin"))
    steps = max(int(d.split("-")[1]) for d in os.listdir(cut) if d.startswith("checkpoint-"))
    assert steps == MID_EPOCH["max_steps"]  # the last step is checkpointed although 9 is no multiple of eval_steps
    monkeypatch.setattr(tasl.TaSL, "end_of_task", original)
    capsys.readouterr()
    main(cli_args(tiny_t5, bench_dir, out, 1, "TaSL", val_set_size=0, resume_from_checkpoint="auto", **MID_EPOCH))
    assert f"resuming task 1-{TASKS[1]} from {os.path.join(cut, f'checkpoint-{steps}')}" in capsys.readouterr().out
    assert read_json(os.path.join(cut, "run_info.json"))["global_steps"] == steps
    reference, resumed = (load_plain(os.path.join(f, "adapter_model.bin")) for f in (whole[1], cut))
    assert reference.keys() == resumed.keys() and all(torch.equal(reference[k], resumed[k]) for k in reference)
    a, b = (load_plain(os.path.join(f, tasl.TASL_STATE)) for f in (whole[1], cut))
    for table in ("present", "accumulated"):
        assert all(torch.equal(a[table][k], b[table][k]) for k in a[table])
