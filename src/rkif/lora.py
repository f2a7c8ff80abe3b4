"""A new LoRA adapter on a loaded model, its target modules resolved against that model first.

peft 0.4.0 matches each name in ``target_modules`` as a plain suffix of the full module name,
so T5's ``k`` also matches the ``block`` ModuleList and peft fails deep inside with a wall of
module text. Here a name must match whole trailing components of Linear layers.
"""

import re

import torch
from peft import LoraConfig, get_peft_model

from .errors import InputError


def parse_target_modules(value):
    """'q,v', '[q, v]', ('q', 'v') -> ['q', 'v']."""
    if isinstance(value, str):
        value = value.strip("[]()").split(",")
    return [str(m).strip().strip("'\"") for m in value if str(m).strip()]


def resolve_target_modules(model, names, flag="lora_target_modules"):
    """peft ``target_modules`` selecting exactly the Linear layers whose name ends with a whole given name.

    The names are returned as they are when peft's suffix matching selects the same modules (the
    released configs keep their ``["q", "v"]``); otherwise a regular expression of whole names.
    """
    modules = dict(model.named_modules())
    linear = {n for n, m in modules.items() if isinstance(m, torch.nn.Linear)}
    candidates = sorted({n.rsplit(".", 1)[-1] for n in linear})
    if not names:
        raise InputError(f"--{flag}: no module names given; e.g. {','.join(candidates[:4])}")
    chosen = set()
    for name in names:
        whole = [n for n in modules if n == name or n.endswith("." + name)]
        if not whole:
            raise InputError(f"--{flag}: no module of the model is named {name!r}; Linear layers are named e.g. "
                             f"{', '.join(candidates[:10])}")
        other = [n for n in whole if n not in linear]
        if other:
            raise InputError(f"--{flag}: {name!r} names {other[0]} ({type(modules[other[0]]).__name__}), not a "
                             f"Linear layer; Linear layers are named e.g. {', '.join(candidates[:10])}")
        chosen.update(whole)
    if {n for n in modules if any(n.endswith(t) for t in names)} == chosen:
        return list(names)
    return r"(.*\.)?(" + "|".join(re.escape(n) for n in names) + ")"


def new_lora_model(model, *, r, alpha, dropout, target_modules, task_type):
    # a pattern saved by an earlier task was resolved then; names are resolved now
    if not isinstance(target_modules, str):
        target_modules = resolve_target_modules(model, target_modules)
    return get_peft_model(model, LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
        bias="none", task_type=task_type))
