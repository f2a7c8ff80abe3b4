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


def test_a_sequence_consolidates_and_an_interruption_before_consolidation_reruns_it_only(
        tiny_t5, bench_dir, tmp_path, monkeypatch, capsys):
    from rkif.plain_data import load_plain

    folders = tasl_run(tiny_t5, bench_dir, str(tmp_path / "whole"), tasks=(0, 1))
    first = load_plain(os.path.join(folders[0], tasl.TASL_STATE))
    assert torch.equal(torch.cat(list(first["present"].values())), torch.cat(list(first["accumulated"].values())))
    second = load_plain(os.path.join(folders[1], tasl.TASL_STATE))
    accumulated = torch.cat(list(second["accumulated"].values()))
    assert accumulated.min() == 0 and accumulated.max() == 1 and len(second["present"]) == 12
    # the adapter saved is the consolidation of the trained weights with task 0's adapter: between them entry by
    # entry (a convex combination), and equal to neither
    a0, a1 = (load_plain(os.path.join(f, "adapter_model.bin")) for f in folders[:2])
    assert a0.keys() == a1.keys() and any(not torch.equal(a0[k], a1[k]) for k in a0)

    # the same two tasks, stopped after task 1's training, before its consolidation
    out = str(tmp_path / "cut")
    tasl_run(tiny_t5, bench_dir, out, tasks=(0,))
    original = tasl.TaSL.end_of_task

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tasl.TaSL, "end_of_task", stop)
    with pytest.raises(KeyboardInterrupt):
        main(cli_args(tiny_t5, bench_dir, out, 1, "TaSL", val_set_size=0))
    cut = adapter_dir(out, tiny_t5, "TaSL", "order", 1, TASKS[1])
    assert not os.path.exists(os.path.join(cut, "adapter_model.bin"))
    steps = max(int(d.split("-")[1]) for d in os.listdir(cut) if d.startswith("checkpoint-"))
    monkeypatch.setattr(tasl.TaSL, "end_of_task", original)
    capsys.readouterr()
    main(cli_args(tiny_t5, bench_dir, out, 1, "TaSL", val_set_size=0, resume_from_checkpoint="auto"))
    assert f"resuming task 1-{TASKS[1]} from {os.path.join(cut, f'checkpoint-{steps}')}" in capsys.readouterr().out
    info = read_json(os.path.join(cut, "run_info.json"))
    assert info["global_steps"] == steps == read_json(os.path.join(folders[1], "run_info.json"))["global_steps"]
    resumed = load_plain(os.path.join(cut, "adapter_model.bin"))
    assert all(torch.equal(a1[k], resumed[k]) for k in a1)  # bit for bit the uninterrupted run's
    again = load_plain(os.path.join(cut, tasl.TASL_STATE))
    assert all(torch.equal(second["accumulated"][k], again["accumulated"][k]) for k in second["accumulated"])
