"""The methods of the harness: one object per method in one registry, each behind the seam of
methods/base.py (which tasks it trains, on which data, how its adapter is built, its extra loss, what
it saves). The Recurrent-KIF loop itself is rkif.loop; every other method lives in one module here.
Adding one: docs/adding-a-method.md.
"""

from ..errors import InputError
from .base import Method
from .ewc import EWC
from .lwf import LwF
from .mtl import MTL
from .olora import OLoRA, IncLoRA
from .replay import Replay
from .rkif import RecurrentKIF
from .seqlora import SeqLoRA
from .tasl import TaSL

METHODS = {m.name: m for m in (RecurrentKIF(), SeqLoRA(), Replay(), OLoRA(), IncLoRA(), EWC(), LwF(), TaSL(), MTL())}
METHOD_NAMES = tuple(METHODS)


def get_method(name, flag="method_name"):
    if name not in METHODS:
        raise InputError(f"--{flag}: unknown method {name!r}; expected one of {METHOD_NAMES}")
    return METHODS[name]


def setting_groups():
    """Every method's settings groups, each once, in the registry's order (the training commands' flags)."""
    return tuple(dict.fromkeys(group for m in METHODS.values() for group in m.settings))


def prediction_kinds(method, matrix):
    """The prediction kinds a run of the method makes: the accuracy matrix, or avgPerf (OP) and bwt (BWT), as
    far as the method has the adapters for them (avgPerf always)."""
    if matrix and "matrix" in method.prediction_kinds:
        return ("matrix",)
    return tuple(k for k in ("avgPerf", "bwt") if k in method.prediction_kinds)


def check_kind(method_name, kind):
    """An unknown method, or a prediction kind the method has no adapters for, is refused."""
    if kind not in get_method(method_name).prediction_kinds:
        raise InputError(f"--method_name {method_name}: trained once on all tasks, it has no adapter after each "
                         f"task, so {kind} (BWT, forgetting) is not defined; use the avgPerf (OP) scripts")


__all__ = ["METHODS", "METHOD_NAMES", "Method", "get_method", "setting_groups", "prediction_kinds", "check_kind"]
