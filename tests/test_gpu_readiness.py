"""Precision per backbone and device, logging integrations, fusion statistics, and the device check on CPU."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from rkif.errors import InputError
from rkif.fusion import fuse, fusion_statistics, global_mask, global_threshold
from rkif.training import check_tf32, parse_report_to, training_precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_gpu(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)


def test_precision_on_cpu():
    assert training_precision("fp32", "t5") == (False, False)
    assert training_precision("auto", "llama") == (False, False)
    for precision, backbone, message in (("bf16", "t5", "--precision bf16 needs a GPU; on CPU use fp32"),
                                         ("fp16", "t5", "--precision fp16: T5 overflows in float16"),
                                         ("auto", "t5", "--precision auto: T5 overflows in float16"),
                                         ("fp16", "llama", "--precision fp16 needs a GPU; on CPU use fp32 (or auto)"),
                                         ("half", "llama", "--precision must be one of")):
        with pytest.raises(InputError) as e:
            training_precision(precision, backbone)
        assert message in str(e.value)


def test_precision_on_gpus_with_and_without_bf16(monkeypatch):
    fake_gpu(monkeypatch, bf16=True)
    assert training_precision("auto", "llama") == (False, True)
    assert training_precision("bf16", "t5") == (False, True)
    assert training_precision("fp32", "t5") == (False, False)
    assert training_precision("fp16", "llama") == (True, False)
    with pytest.raises(InputError, match="T5 overflows in float16"):
        training_precision("fp16", "t5")
    fake_gpu(monkeypatch, bf16=False)
    assert training_precision("auto", "llama") == (True, False)
    with pytest.raises(InputError, match="this GPU has no bfloat16 support"):
        training_precision("bf16", "t5")


def test_report_to_and_tf32(monkeypatch):
    import importlib.util

    assert parse_report_to("none") == [] and parse_report_to("") == []
    with pytest.raises(InputError, match="--report_to: unknown 'mlflow'; expected none, or tensorboard and/or wandb"):
        parse_report_to("tensorboard,mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "tensorboardX",
                                                                                       "wandb") else real(name, *a))
    with pytest.raises(InputError, match=r"--report_to wandb: the optional wandb package is not installed "
                                         r"\(pip install wandb\)"):
        parse_report_to("wandb")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else None)
    assert parse_report_to("tensorboard") == ["tensorboard"]
    with pytest.raises(InputError, match="--tf32 needs an NVIDIA GPU of the Ampere generation or newer"):
        check_tf32(True)
    check_tf32(False)


def test_fusion_statistics_against_a_hand_made_fusion():
    # two tensors, 10 entries: inner-only 3, outer-only 2, both 1, neither 4
    inner = {"a": torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]), "b": torch.tensor([0.0, 0.0, 0.0, 0.0])}
    outer = {"a": torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0]), "b": torch.tensor([1.0, 0.0, 0.0, 0.0])}
    d_in = {"a": torch.full((6,), 3.0), "b": torch.full((4,), -1.0)}
    d_out = {"a": torch.full((6,), 0.5), "b": torch.full((4,), 2.0)}
    stats = fusion_statistics(d_in, d_out, inner, outer)
    assert stats["share_inner_only"] == 0.3 and stats["share_outer_only"] == 0.2
    assert stats["share_both"] == 0.1 and stats["share_neither"] == 0.4
    assert math.isclose(sum(v for k, v in stats.items() if k.startswith("share_")), 1.0)
    assert stats["delta_in_norm"] == pytest.approx(math.sqrt(6 * 9 + 4 * 1))
    assert stats["delta_out_norm"] == pytest.approx(math.sqrt(6 * 0.25 + 4 * 4))
    # the shares are those of the weights the fusion applied: w_in = 1 / 0 / 0.4 / 0.5 per case
    zeros = lambda d: {k: torch.zeros_like(v) for k, v in d.items()}  # noqa: E731
    fused = fuse(zeros(d_in), d_in, zeros(d_out), inner, outer)
    w_in = torch.cat([fused["a"] / 3.0, fused["b"] / -1.0])
    assert [(w_in == w).float().mean().item() for w in (1.0, 0.0, 0.4, 0.5)] == pytest.approx([0.3, 0.2, 0.1, 0.4])
    # threshold and mask agree
    scores = {"a": torch.arange(6.0), "b": torch.arange(6.0, 10.0)}
    tau = global_threshold(scores, 0.8)
    assert float(tau) == pytest.approx(7.2)
    assert global_mask(scores, 0.8, tau)["b"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert global_threshold({}, 0.8) is None


def test_device_check_runs_every_section_on_cpu_and_keeps_a_failed_ones_record(tmp_path):
    """--tiny: the GPU check's sections on CPU; one is failed on purpose, the others still run and the
    JSON (rewritten after every section) records each."""
    out = tmp_path / "check"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "device_check.py"), "--tiny", "--out", str(out),
                        "--steps", "4", "--gen_examples", "6", "--gen_batch_size", "3", "--gen_max_length", "12",
                        "--fail_section", "t5_resume"],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 1, p.stderr[-3000:]  # a section failed
    report = json.load(open(out / "device_check.json"))
    assert report["tiny"] is True and report["versions"]["device"] == "cpu"
    sections = report["sections"]
    assert list(sections) == ["t5_methods", "t5_precisions", "t5_resume", "t5_generation", "ddp", "llama_methods",
                              "llama_precisions", "llama_resume", "llama_generation"]
    assert sections["t5_resume"]["ok"] is False and "forced failure" in sections["t5_resume"]["error"]
    assert sections["ddp"]["ok"] is None and "needs two or more" in sections["ddp"]["skipped"]
    for backbone in ("t5", "llama"):
        methods = sections[f"{backbone}_methods"]
        assert methods["ok"] is True, methods
        for name in ("RKIF", "SeqLoRA", "Replay", "OLoRA", "IncLoRA", "EWC", "MTL"):
            assert methods[name]["ok"] is True and methods[name]["steps"] == 4
        assert methods["RKIF"]["fusions"] == 2 and methods["SeqLoRA"]["fusions"] == 0
        assert methods["ratio_rkif_over_seqlora"] == pytest.approx(methods["RKIF"]["seconds_per_step"] /
                                                                   methods["SeqLoRA"]["seconds_per_step"])
        last = methods["RKIF"]["last_fusion"]
        assert sum(last[k] for k in ("share_inner_only", "share_outer_only", "share_both", "share_neither")) \
            == pytest.approx(1.0)
        variants = sections[f"{backbone}_precisions"]
        assert variants["ok"] is True and variants["separate_outer_optimizer"]["fusions"] == 2
        g = sections[f"{backbone}_generation"]
        assert g["ok"] is True and g["examples"] == 6 and g["identical_outputs"] is True
        assert g["precision"] == "bf16" and "agreement_with_fp32" in g
    assert sections["llama_precisions"]["outer_micro_batch_size"]["fusions"] == 2
    resumed = sections["llama_resume"]
    assert resumed["ok"] is True and resumed["resumed_from_step"] == 2 and resumed["bitwise"] is True
    assert "t5_resume                FAILED" in p.stdout and "RKIF / SeqLoRA step time" in p.stdout


def test_fusions_are_logged_for_tensorboard_and_kept_per_fusion(tiny_t5, bench_dir, tmp_path):
    """With logging_steps = K every log line carries the fusion of that step; the history keeps each one."""
    from test_trainer_schedule import make_trainer

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
