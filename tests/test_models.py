"""The training precision per backbone and device (one resolver, rkif.base_model), TF32, and --report_to."""

import pytest
import torch

from rkif.errors import InputError
from rkif.base_model import check_tf32, training_precision
from rkif.training import parse_report_to


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
