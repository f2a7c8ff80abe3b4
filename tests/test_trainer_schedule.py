"""The Recurrent-KIF schedule inside the real transformers 4.28.1 training loop, on a tiny T5."""

import os

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from rkif.compat import STACK
from rkif.adapters import lora_parameters, save_adapter_atomically
from rkif.fusion import global_mask

from trainers import make_trainer


def test_outer_loop_runs_exactly_every_K_optimizer_steps(tiny_t5, bench_dir, tmp_path):
    # 24 examples, micro-batch 2, accumulation 2: 6 optimizer steps per epoch, 2 epochs = 12 steps
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, K=5, M=3, accumulation=2, epochs=2,
                           empty_inner_score_flag=False)
    trainer.train()
    assert trainer.state.global_step == 12
    assert [h["global_step"] for h in trainer.kif_history] == [5, 10]  # steps 11, 12 are never fused
    assert all(len(h["outer_losses"]) == 3 and len(h["memory_indices"]) == 3 for h in trainer.kif_history)
    assert all(len(ix) == 4 for h in trainer.kif_history for ix in h["memory_indices"])
    # one inner tracker update per optimizer step (not per micro-batch); flag 0 keeps counting
    assert trainer.inner_tracker.num_updates == 12
    assert trainer.outer_tracker.num_updates == 6
    # the LR scheduler advanced once per inner optimizer step only
    assert trainer.lr_scheduler.last_epoch == 12
    for h in trainer.kif_history:  # linear decay from 1e-2 to 0 over 12 steps, no warm-up
        assert h["learning_rate"] == pytest.approx(1e-2 * (12 - h["global_step"]) / 12)


def test_no_memory_means_plain_lora_training(tiny_t5, bench_dir, tmp_path):
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, memory=False, K=2)
    trainer.train()
    assert trainer.state.global_step == 12
    assert trainer.kif_history == [] and trainer.inner_tracker.num_updates == 0
    assert trainer.kif_summary()["enabled"] is False


def test_inner_tracker_reset_flag(tiny_t5, bench_dir, tmp_path):
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, K=4, empty_inner_score_flag=True,
                           empty_outer_score_flag=True)
    trainer.train()  # 12 steps: fusions at 4, 8, 12 each reset both trackers
    assert [h["global_step"] for h in trainer.kif_history] == [4, 8, 12]
    assert trainer.inner_tracker.num_updates == 0 and trainer.outer_tracker.num_updates == 0


def test_outer_step_is_an_ordinary_training_step_divided_by_accumulation(tiny_t5, bench_dir, tmp_path):
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, accumulation=4)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.model_wrapped = trainer.model
    trainer.model.eval()  # outer_step must switch to training mode itself
    indices, batch = trainer.draw_memory_batch()
    with torch.no_grad():
        expected = trainer.model(**batch).loss.item() / 4
    before = {n: p.detach().clone() for n, p in lora_parameters(trainer.model).items()}
    loss = trainer.outer_step(batch)
    assert trainer.model.training
    assert loss == pytest.approx(expected, rel=1e-5)
    after = lora_parameters(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the shared optimizer moved theta
    assert all(p.grad is None for p in after.values())
    assert trainer.outer_tracker.num_updates == 1 and trainer.inner_tracker.num_updates == 0
    assert trainer.lr_scheduler.last_epoch == 0


def test_fusion_writes_four_case_combination_into_the_model(tiny_t5, bench_dir, tmp_path):
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, M=1, quantile=0.5)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.state.max_steps = 10
    trainer._kif_begin()
    params = lora_parameters(trainer.model)
    g = torch.Generator().manual_seed(0)
    anchor = {n: p.detach().clone() for n, p in params.items()}
    inner_delta = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
    outer_delta = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
    with torch.no_grad():  # pretend K inner steps moved theta by inner_delta
        for n, p in params.items():
            p.add_(inner_delta[n])
            p.grad = torch.rand(p.shape, generator=g)
    trainer.inner_tracker.update(trainer.model.named_parameters())
    inner_mask = global_mask(trainer.inner_tracker.scores(), 0.5)

    def fake_outer_step(batch):
        with torch.no_grad():
            for n, p in params.items():
                p.grad = torch.rand(p.shape, generator=g)
                p.add_(outer_delta[n])
        trainer.outer_tracker.update(trainer.model.named_parameters())
        return torch.tensor(0.0)  # as outer_step: the loss as a tensor, read once per fusion

    trainer.outer_step = fake_outer_step
    trainer.recurrent_step()
    outer_mask = global_mask(trainer.outer_tracker.scores(), 0.5)
    for n, p in params.items():
        a, di, do = anchor[n].flatten(), inner_delta[n].flatten(), outer_delta[n].flatten()
        mi, mo = inner_mask[n].flatten(), outer_mask[n].flatten()
        for j in range(a.numel()):
            w = {(1, 0): (1.0, 0.0), (0, 1): (0.0, 1.0), (1, 1): (0.4, 0.6), (0, 0): (0.5, 0.5)}[
                (int(mi[j]), int(mo[j]))]
            assert p.flatten()[j].item() == pytest.approx((a[j] + w[0] * di[j] + w[1] * do[j]).item(), abs=1e-5)
        assert torch.equal(trainer.anchor[n], p.detach())  # anchor moves to the fused parameters
    assert 0 < sum(m.sum().item() for m in inner_mask.values()) < sum(m.numel() for m in inner_mask.values())


def test_separate_outer_optimizer_has_its_own_advancing_schedule(tiny_t5, bench_dir, tmp_path):
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, K=3, M=2, outer_optimizer="separate", outer_lr=5e-3,
                           warmup=3)
    trainer.train()
    assert trainer.outer_optimizer is not trainer.optimizer
    # 12 inner steps -> 4 fusions x 2 = 8 outer steps; warm-up 3 * M / K = 2 outer steps
    assert trainer.outer_scheduler.last_epoch == 8
    assert trainer.lr_scheduler.last_epoch == 12
    assert len(trainer.outer_optimizer.state) == len(lora_parameters(trainer.model))


def test_saved_adapter_holds_every_lora_tensor_and_reloads_equal(tiny_t5, bench_dir, tmp_path):
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, K=4)
    trainer.train()
    out = str(tmp_path / "adapter")
    save_adapter_atomically(trainer.model, out, {"note.txt": "x"})
    assert sorted(os.listdir(out)) == ["README.md", "adapter_config.json", "adapter_model.bin", "note.txt"]
    saved = torch.load(os.path.join(out, "adapter_model.bin"))
    live = lora_parameters(trainer.model)
    assert len(saved) == len(live) > 0
    reloaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), out)
    reloaded_lora = {n: p for n, p in reloaded.named_parameters() if "lora_" in n}
    assert set(reloaded_lora) == set(live)
    for n, p in live.items():
        assert torch.equal(reloaded_lora[n], p.detach())


def test_collating_never_grows_the_stored_features(tiny_t5):
    from rkif.loop import FeatureList

    tok = AutoTokenizer.from_pretrained(tiny_t5)
    collate = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, padding=True)
    feats = [{"input_ids": [5, 6, 1], "attention_mask": [1, 1, 1], "labels": [7, 1]},
             {"input_ids": [5, 1], "attention_mask": [1, 1], "labels": [7, 8, 9, 1]}]
    stored = FeatureList([dict(f) for f in feats])
    for _ in range(3):
        batch = collate([stored[0], stored[1]])
        assert batch["labels"].shape == (2, 8)
    assert stored.features == feats
    if STACK == "pinned":  # 4.28.1's collator pads the caller's dicts, which FeatureList prevents
        plain = [dict(f) for f in feats]
        collate(plain)
        assert len(plain[0]["labels"]) == 8


def test_fusions_are_logged_for_tensorboard_and_kept_per_fusion(tiny_t5, bench_dir, tmp_path):
    """With logging_steps = K every log line carries the fusion of that step; the history keeps each one."""
    trainer = make_trainer(tiny_t5, bench_dir, tmp_path, K=3, M=2)
    trainer.args.logging_steps = 3
    trainer.train()
    history = trainer.fusion_history()
    assert [h["global_step"] for h in history] == [3, 6, 9, 12]
    logged = [h for h in trainer.state.log_history if "kif/share_both" in h]
    assert [h["step"] for h in logged] == [3, 6, 9, 12]
    for line, fusion, raw in zip(logged, history, trainer.kif_history):
        assert line["outer_loss"] == round(sum(raw["outer_losses"]) / 2, 4)
        for key in ("share_inner_only", "share_outer_only", "share_both", "share_neither", "tau_inner", "tau_outer",
                    "delta_in_norm", "delta_out_norm"):
            assert line[f"kif/{key}"] == pytest.approx(fusion[key], rel=1e-5)
        assert sum(fusion[k] for k in ("share_inner_only", "share_outer_only", "share_both", "share_neither")) \
            == pytest.approx(1.0, abs=1e-5)
        assert fusion["delta_in_norm"] > 0
    # the outer steps use the inner optimizer at the scheduled learning rate, which is 0 at the last step
    assert [f["delta_out_norm"] > 0 for f in history] == [True, True, True, False]

