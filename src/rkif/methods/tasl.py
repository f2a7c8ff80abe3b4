"""TaSL (Task Skill Localization and Consolidation, Feng et al., ACL 2024), in its LoRA form: the
Recurrent-KIF authors' previous method, as their release (WoodScene/TaSL) runs it in
finetune_TasLoRA.py, utils/lora_tailored_importance.py and skill_consolidation_TasLoRA.py.

Skill units. One unit per rank component of each LoRA-wrapped module: row r of lora_A with column
r of lora_B (lora_tailored_importance.py, the unit names "{module}|||{r}").

Importance, while the task trains. After every optimizer step but the task's first (the release
updates when 0 < global_step < total steps), on the post-update weights and the step's clipped
gradients, for every LoRA entry: s = |theta g - (theta g)^2 / 2|, the first-order term with its
second-order approximation ("param_mix"); then the EMAs of Recurrent-KIF's importance (rkif.importance,
with --beta1 and --beta2, whose defaults both releases use): I <- b1 I + (1 - b1) s, U <- b2 U +
(1 - b2)|s - I|, and the entry's score I x U. A unit's importance is the mean over its B column
times the mean over its A row (the mean of their outer product).

Consolidation, after task t > 0 (skill_consolidation_TasLoRA.py):
- The present table P (this task's units) and the accumulated one Q (the earlier tasks') are each
  min-max normalised over all units of all modules.
- Unit by unit, coefficients c = softmax(P / tau, Q / tau) (tau = 0.25): c_t for this task's
  weights, c_prev = 1 - c_t for the consolidated adapter the task started from.
- The adapter saved is A[r, :] = c_t A_t[r, :] + c_prev A_prev[r, :], B[:, r] likewise: it is what the
  next task starts from, what predictions use and what the adapter folder holds.
- The accumulated table becomes min-max(0.3 P + 0.7 Q).
After task 0 the adapter is the trained one and the accumulated table the raw present table. With
validation on (--val_set_size > 0), the trained weights are the best checkpoint's, which the Trainer
reloads at the end, while the importance covers every step, as in the release.

Differences from the release, on purpose: units are paired by name, not by row position of two CSV
files; a table whose units are all equal normalises to zeros instead of 0/0; a step with a NaN or inf
gradient is skipped whole (rkif.importance) where the release stops at the first such tensor; the
release adds an orthogonality regulariser (0.1 x ||A A^T - I||) to the loss in finetune_TasLoRA.py,
which the paper's TaSL does not describe and is not part of the method here.

Files beside each adapter: tasl_importance.pt, {"present": {module: [r]}, "accumulated": {module: [r]}},
read back as plain data by the next task. The importance EMAs go into every checkpoint, and the
task's last step is always checkpointed, so a task interrupted after training reruns the
consolidation only.
"""

import os

import torch

from ..adapters import ADAPTER_WEIGHTS, lora_parameters
from ..errors import InputError
from ..importance import ImportanceTracker
from ..plain_data import load_plain
from ..settings import TaSLSettings
from .base import Method

TASL_STATE = "tasl_importance.pt"
PRESENT_SHARE = 0.3  # skill_consolidation_TasLoRA.py: accumulated = 0.3 x present + 0.7 x previous


def module_key(name):
    """The LoRA module a parameter or adapter-file key belongs to: everything before lora_A / lora_B."""
    for part in ("lora_A", "lora_B"):
        if part in name:
            return name.split(part)[0]
    return None


def lora_pairs(named):
    """{module key: (A, B)} from (name, tensor) pairs (model parameters or adapter-file entries)."""
    pairs = {}
    for name, t in named:
        key = module_key(name)
        if key is not None:
            a, b = pairs.get(key, (None, None))
            pairs[key] = (t, b) if "lora_A" in name else (a, t)
    missing = [k for k, (a, b) in pairs.items() if a is None or b is None]
    if missing:
        raise InputError(f"LoRA module {missing[0]} has no lora_A or no lora_B")
    return pairs


def unit_importance(scores):
    """{module key: [rank] tensor}: per rank component r, mean over B[:, r]'s scores x mean over A[r, :]'s."""
    return {key: b.mean(dim=0) * a.mean(dim=1) for key, (a, b) in lora_pairs(scores.items()).items()}


def min_max(table):
    """The table normalised to [0, 1] over all units of all modules together (zeros where all are equal)."""
    values = torch.cat([v.reshape(-1).float() for v in table.values()])
    low, high = values.min(), values.max()
    span = high - low
    return {k: torch.zeros_like(v, dtype=torch.float32) if span == 0 else (v.float() - low) / span
            for k, v in table.items()}


def consolidate(present, accumulated, present_weights, previous_weights, temperature):
    """(consolidated weights {key: (A, B)}, coefficients {key: c_t [rank]}, the new accumulated table).

    present, accumulated: {key: [rank]} importance tables; present_weights: this task's trained (A, B) per
    module; previous_weights: the consolidated (A, B) the task started from."""
    if present.keys() != accumulated.keys() or present.keys() != previous_weights.keys():
        raise InputError("TaSL: the importance tables and adapters name different LoRA modules "
                         f"({sorted(set(present) ^ set(accumulated) ^ set(previous_weights))[:3]} ...)")
    p, q = min_max(present), min_max(accumulated)
    weights, coefficients, mixed = {}, {}, {}
    for key in present:
        c = torch.softmax(torch.stack([p[key], q[key]]) / temperature, dim=0)[0]
        (a_t, b_t), (a_prev, b_prev) = present_weights[key], previous_weights[key]
        c_a = c.to(a_t.device, a_t.dtype)[:, None]
        c_b = c.to(b_t.device, b_t.dtype)[None, :]
        weights[key] = (c_a * a_t + (1 - c_a) * a_prev.to(a_t), c_b * b_t + (1 - c_b) * b_prev.to(b_t))
        coefficients[key] = c
        mixed[key] = PRESENT_SHARE * p[key] + (1 - PRESENT_SHARE) * q[key]
    return weights, coefficients, min_max(mixed)


class SkillImportance:
    """The Trainer's step tracker for TaSL: the importance EMAs after every optimizer step but the first."""

    def __init__(self, beta1, beta2):
        self.tracker = ImportanceTracker(beta1, beta2, second_order=True)

    def update(self, model, global_step):
        if global_step > 0:  # the release skips the task's first update
            self.tracker.update(model.named_parameters())

    def state_dict(self):
        return self.tracker.state_dict()

    def load_state_dict(self, state):
        self.tracker.load_state_dict(state)

    def table(self):
        return unit_importance(self.tracker.scores())


class TaSL(Method):
    name = "TaSL"
    settings = (TaSLSettings,)
    state_files = (TASL_STATE,)

    def step_tracker(self, settings):
        return SkillImportance(settings.kif.beta1, settings.kif.beta2)

    def end_of_task(self, trainer, plan, features, micro_batch_size, settings):
        """Consolidate the trained adapter with the one the task started from, in place (the adapter saved
        next is the consolidated one), and save the importance tables beside it."""
        present = {k: v.detach().cpu() for k, v in trainer.step_tracker.table().items()}
        if not present:
            raise InputError(f"TaSL: no importance was tracked in task {plan.task_id} (it needs at least two "
                             "optimizer steps: the release skips the first); give more --num_epochs or --max_steps")
        accumulated = present
        if plan.previous_adapter:
            previous = previous_state(plan.previous_adapter)
            params = lora_pairs(lora_parameters(trainer.model).items())
            weights, _, accumulated = consolidate(
                present, previous["accumulated"], {k: (a.detach(), b.detach()) for k, (a, b) in params.items()},
                lora_pairs(load_plain(os.path.join(plan.previous_adapter, ADAPTER_WEIGHTS)).items()),
                settings.tasl.tasl_temperature)
            with torch.no_grad():
                for key, (a, b) in params.items():
                    a.copy_(weights[key][0])
                    b.copy_(weights[key][1])
        state = {"present": present, "accumulated": accumulated}
        return {TASL_STATE: lambda path: torch.save(state, path)}


def previous_state(adapter_dir):
    path = os.path.join(adapter_dir, TASL_STATE)
    if not os.path.isfile(path):
        raise InputError(f"{adapter_dir}: no {TASL_STATE} beside the adapter; was the previous task trained with "
                         "--method_name TaSL?")
    state = load_plain(path)
    if not isinstance(state, dict) or not {"present", "accumulated"} <= set(state):
        raise InputError(f"{path}: expected TaSL's importance tables (present, accumulated)")
    return state
