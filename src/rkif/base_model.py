"""Loading a base model: the folder check, from_pretrained with errors a user can act on, and the one
resolver of training precision for both backbones (generation's is rkif.generation_precision)."""

import os

import torch

from .compat import check_gguf, is_gguf
from .errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _looks_like_path(text):
    first = text.replace("\\", "/").split("/")[0]
    return (text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text
            or (first != text and os.path.isdir(first)))


def check_base_model(base_model, flag="base_model"):
    """A local model folder with a config.json, or a hub id where downloads are possible."""
    if not base_model:
        raise InputError(f"--{flag}: required (a model folder saved with save_pretrained, e.g. /models/t5-large)")
    if is_gguf(base_model):
        check_gguf(base_model, flag)
        return
    if os.path.isdir(base_model):
        if not os.path.isfile(os.path.join(base_model, "config.json")):
            raise InputError(f"--{flag}: folder {base_model} holds no config.json; expected a model folder "
                             "saved with save_pretrained")
        return
    if _looks_like_path(base_model):
        raise InputError(f"--{flag}: folder {base_model} does not exist")
    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v, "0") not in ("", "0")]
    if offline:
        raise InputError(f"--{flag}: {base_model} is not a local folder, and as a hub id it cannot be downloaded "
                         f"({offline[0]} is set); give a model folder")


def load_pretrained(load, base_model, flag="base_model", **kwargs):
    """``load(base_model, **kwargs)`` (a from_pretrained); a model that cannot be loaded is an InputError."""
    try:
        return load(base_model, **kwargs)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"--{flag}: could not load {base_model}: {first}") from None


def training_precision(precision, backbone="llama"):
    """(fp16, bf16) Trainer flags. auto (LLaMA): fp32 on CPU; bf16 on a GPU that has it, else fp16.
    T5 takes fp32 (the released recipe) or bf16: its activations overflow float16."""
    if backbone == "t5" and precision in ("fp16", "auto"):
        raise InputError(f"--precision {precision}: T5 overflows in float16 (its activations exceed the fp16 "
                         "range); use fp32 (default) or, on a GPU with bfloat16, bf16")
    choices = PRECISIONS if backbone == "llama" else ("fp32", "bf16")
    if precision not in choices:
        raise InputError(f"--precision must be one of {choices}, got {precision!r}")
    if precision == "auto":
        if not torch.cuda.is_available():
            return False, False
        return (False, True) if torch.cuda.is_bf16_supported() else (True, False)
    if precision != "fp32" and not torch.cuda.is_available():
        raise InputError(f"--precision {precision} needs a GPU; on CPU use fp32" + (" (or auto)" if backbone == "llama"
                                                                                    else ""))
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise InputError("--precision bf16: this GPU has no bfloat16 support; use fp32")
    return precision == "fp16", precision == "bf16"


def check_tf32(tf32):
    if tf32 and not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8):
        raise InputError("--tf32 needs an NVIDIA GPU of the Ampere generation or newer (compute capability 8+)")
