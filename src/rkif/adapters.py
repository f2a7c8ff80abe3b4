"""Saving and loading LoRA adapters so that every LoRA tensor survives the round trip.

The released recipe overrode ``model.state_dict`` and, under peft 0.4.0, wrote an empty
adapter_model.bin and silently reloaded nothing; here a load that does not match the
model's LoRA tensors key for key is an error.
"""

import os
import shutil

from peft import get_peft_model_state_dict, set_peft_model_state_dict

from . import compat
from .plain_data import load_plain

ADAPTER_WEIGHTS = "adapter_model.bin"
ADAPTER_CONFIG = "adapter_config.json"


def adapter_exists(directory):
    return os.path.isfile(os.path.join(directory, ADAPTER_WEIGHTS))


def lora_parameters(model):
    """{name: parameter} for every trainable tensor whose name contains ``lora_``."""
    return {n: p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad}


def load_adapter_weights(model, directory):
    path = os.path.join(directory, ADAPTER_WEIGHTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: no {ADAPTER_WEIGHTS} to load")
    saved = load_plain(path)
    expected = set(get_peft_model_state_dict(model))
    missing, unexpected = expected - set(saved), set(saved) - expected
    if missing or unexpected:
        raise RuntimeError(
            f"{path} does not match the model's LoRA tensors: "
            f"{len(missing)} missing (e.g. {sorted(missing)[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})"
        )
    set_peft_model_state_dict(model, saved)


def save_adapter_atomically(model, directory, extra_files=None):
    """Write the adapter into ``directory`` through a temporary folder; adapter_model.bin lands last.

    Its presence therefore means the task finished: an interrupted save leaves no adapter_model.bin
    behind, and scripts that skip finished tasks test exactly that file. ``extra_files`` maps file
    names to text written beside it (e.g. run_info.json), or to a writer(path) for other files.
    """
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".adapter.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    compat.save_adapter(model, tmp)
    for name, content in (extra_files or {}).items():
        if callable(content):  # a writer of a binary file
            content(os.path.join(tmp, name))
            continue
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
            f.write(content)
    names = sorted(os.listdir(tmp), key=lambda n: n == ADAPTER_WEIGHTS)
    for name in names:
        os.replace(os.path.join(tmp, name), os.path.join(directory, name))
    os.rmdir(tmp)
