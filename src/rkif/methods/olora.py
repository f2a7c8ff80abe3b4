"""O-LoRA (Wang et al. 2023) and IncLoRA: a new LoRA branch per task, the earlier ones frozen.

The branches of tasks 0..t live in one peft LoRA of rank r*(t+1) with lora_alpha*(t+1), so every
branch keeps the scale alpha/r and the sum B A is the sum of the branches: rows [0, r*t) of each
lora_A and columns [0, r*t) of each lora_B are the earlier branches, copied from the previous
adapter and frozen (their gradients are zeroed, so AdamW, without weight decay, never moves
them); the last r rows / columns are the new branch (A Kaiming-initialised by peft, B zero). The
saved adapter is therefore a standard peft LoRA that PeftModel.from_pretrained and generation
load as they are, and inference uses every branch without a task id.
"""

import json
import os

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from ..adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from ..errors import InputError
from ..lora import new_lora_model
from ..plain_data import load_plain
from ..settings import OLoRASettings
from .base import Method


def lora_modules(model):
    """(name, module) of every peft LoRA layer of the model."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]


def previous_branches(adapter_dir, task_id):
    """(rank per branch, alpha per branch, target modules) of the adapter saved after task_id - 1."""
    with open(os.path.join(adapter_dir, ADAPTER_CONFIG)) as f:
        config = json.load(f)
    if config["r"] % task_id:
        raise InputError(f"{adapter_dir}: rank {config['r']} is not {task_id} branches of one rank; was it trained "
                         "with another method?")
    return config["r"] // task_id, config["lora_alpha"] / task_id, config["target_modules"]


def copy_previous_branches(model, adapter_dir, old_rank):
    """Rows [0, old_rank) of every lora_A and columns [0, old_rank) of every lora_B from the saved adapter."""
    saved = load_plain(os.path.join(adapter_dir, ADAPTER_WEIGHTS))
    state = get_peft_model_state_dict(model)
    if set(saved) != set(state):
        raise InputError(f"{adapter_dir}: its LoRA tensors do not match the model's ({len(saved)} vs {len(state)})")
    for key, value in state.items():
        value = value.clone()
        if "lora_A" in key:
            value[:old_rank] = saved[key]
        else:
            value[:, :old_rank] = saved[key]
        state[key] = value
    set_peft_model_state_dict(model, state)


def _without_rows(grad, n):
    """grad with its first n rows zeroed, by a mask made on the gradient's own device."""
    return grad * (torch.arange(grad.shape[0], device=grad.device) >= n).to(grad.dtype).unsqueeze(1)


def _without_columns(grad, n):
    return grad * (torch.arange(grad.shape[1], device=grad.device) >= n).to(grad.dtype).unsqueeze(0)


def freeze_previous_branches(model, old_rank):
    """Zero the gradients of the earlier branches (rows of A, columns of B); returns the hook handles.

    The hooks hold no tensor of their own: they are registered while the model is still on the CPU
    and the Trainer moves it to the GPU afterwards, so a mask made here would meet a CUDA gradient.
    """
    handles = []
    for _, module in lora_modules(model):
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        handles += [a.register_hook(lambda g: _without_rows(g, old_rank)),
                    b.register_hook(lambda g: _without_columns(g, old_rank))]
    return handles


def orthogonality_penalty(model, old_rank):
    """sum over LoRA modules of |A_old A_new^T|.sum(): every earlier row of A against every new one."""
    total = 0.0
    for _, module in lora_modules(model):
        a = module.lora_A["default"].weight
        old, new = a.narrow(0, 0, old_rank), a.narrow(0, old_rank, a.shape[0] - old_rank)
        total = total + (old @ new.T).abs().sum()
    return total


def l2_penalty(model, old_rank):
    """sum over LoRA modules of the L2 (Frobenius) norms of the new branch's A and B."""
    total = 0.0
    for _, module in lora_modules(model):
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        total = total + a.narrow(0, old_rank, a.shape[0] - old_rank).norm() + \
            b.narrow(1, old_rank, b.shape[1] - old_rank).norm()
    return total


def branch_penalty(old_rank, lambda_orth, lambda_l2):
    """The extra loss of a training step, added to each micro-batch's task loss before the Trainer divides
    the sum by the accumulation steps: the penalties count once per optimizer step. The O-LoRA release
    does the same in effect: it adds them after its training_step skipped that division (it runs under
    DeepSpeed), and DeepSpeed's backward then divides task loss and penalties together. Its logged
    order-1 runs (logs_and_outputs/order1_olora/hyparam.sh: 2 GPUs x 8 x accumulation 4) rely on it."""
    def penalty(model, inputs=None, outputs=None):  # the extra-loss seam; the penalties read the weights only
        loss = 0.0
        if lambda_orth and old_rank:
            loss = loss + lambda_orth * orthogonality_penalty(model, old_rank)
        if lambda_l2:
            loss = loss + lambda_l2 * l2_penalty(model, old_rank)
        return loss

    return penalty


class OLoRA(Method):
    """A new branch per task, earlier ones frozen; the orthogonality and L2 penalties on the new one."""
    name = "OLoRA"
    settings = (OLoRASettings,)

    def penalty_weights(self, olora):
        return olora.lambda_orth, olora.lambda_l2

    def build(self, base, plan, lora, settings):
        t, previous = plan.task_id, plan.previous_adapter
        r, alpha, target_modules = lora.r, lora.alpha, lora.target_modules
        if previous:  # the branches keep the first task's rank, alpha and targets
            r, alpha, target_modules = previous_branches(previous, t)
        model = new_lora_model(base, r=r * (t + 1), alpha=alpha * (t + 1), dropout=lora.dropout,
                               target_modules=target_modules, task_type=lora.task_type)
        if previous:
            copy_previous_branches(model, previous, r * t)
            freeze_previous_branches(model, r * t)
        return model, branch_penalty(r * t, *self.penalty_weights(settings.olora))


class IncLoRA(OLoRA):
    """O-LoRA's branches without its orthogonality penalty (lambda_orth 0 whatever the flag); the L2 weight
    is --lambda_l2, which both recipes set to 0 for it (rkif: for every method; olora: here)."""
    name = "IncLoRA"

    def penalty_weights(self, olora):
        return 0.0, olora.lambda_l2

    def recipe_values(self, recipe, values):
        return {**values, "lambda_orth": 0.0, "lambda_l2": 0.0} if recipe == "olora" else values
