"""The methods of the harness, each behind the same narrow seam of the one Trainer.

A method decides (1) which data a task trains on (memory for the outer loop, memory mixed in, the
union of all tasks), (2) how the task's adapter is built from the base model and the previous
task's adapter, (3) an extra loss term, and (4) what it saves beside the adapter at the end of a
task. The Recurrent-KIF loop itself is rkif.loop; the others live in one module each.
"""

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class Method:
    name: str
    memory: str = "none"  # "outer": the Recurrent-KIF outer loop; "mixed": into the task's data (Replay)
    sequential: bool = True  # False: trained once on all tasks (MTL), at the order's last task id
    branches: bool = False  # a new frozen-old LoRA branch per task (O-LoRA, IncLoRA)
    ewc: bool = False

METHODS = {m.name: m for m in (
    Method("RKIF", memory="outer"),
    Method("SeqLoRA"),
    Method("Replay", memory="mixed"),
    Method("OLoRA", branches=True),
    Method("IncLoRA", branches=True),
    Method("EWC", ewc=True),
    Method("MTL", sequential=False),
)}
METHOD_NAMES = tuple(METHODS)


def get_method(name, flag="method_name"):
    if name not in METHODS:
        raise InputError(f"--{flag}: unknown method {name!r}; expected one of {METHOD_NAMES}")
    return METHODS[name]
