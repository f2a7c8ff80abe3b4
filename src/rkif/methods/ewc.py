"""EWC on the LoRA parameters: a running diagonal Fisher and the parameters after the previous task.

After each task the diagonal Fisher of the LoRA parameters (the mean over the task's training
batches of the squared gradient of the task loss, model in eval mode) is added to the running
Fisher; training of later tasks adds (ewc_lambda / 2) * sum F * (theta - theta_prev)^2 to the
loss. Both are saved beside the adapter as ewc_state.pt and read by the next task.
"""

import contextlib
import os
import sys

import torch

from ..plain_data import load_plain

EWC_STATE = "ewc_state.pt"


def ewc_penalty(model, fisher, theta_prev, ewc_lambda):
    """(ewc_lambda / 2) * sum over LoRA tensors of F * (theta - theta_prev)^2.

    fisher and theta_prev are read at set-up, before the Trainer moves the model to its device;
    each tensor follows its parameter there on first use (kept in the dicts, so copied once).
    """
    total = 0.0
    for name, p in model.named_parameters():
        if name in fisher:
            if fisher[name].device != p.device:
                fisher[name], theta_prev[name] = fisher[name].to(p.device), theta_prev[name].to(p.device)
            total = total + (fisher[name] * (p - theta_prev[name]) ** 2).sum()
    return ewc_lambda / 2 * total


def diagonal_fisher(model, batches, parameters, autocast=contextlib.nullcontext, loss_scale=1.0):
    """{name: mean over batches of grad^2} of the task loss, for the given {name: parameter}.

    autocast: the context training ran its forward in (the Trainer's compute_loss_context_manager),
    so the Fisher sees the model as training did. loss_scale: the fp16 gradient scaler's scale; the
    loss is multiplied by it so that small gradients do not underflow in fp16, and the gradients are
    divided by it again (in fp32) before squaring. A batch whose scaled gradients overflow is left out.
    """
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in parameters.items()}
    was_training = model.training
    model.eval()
    count = skipped = 0
    for batch in batches:
        model.zero_grad()
        with autocast():
            loss = model(**batch).loss
        (loss * loss_scale).backward()
        grads = {n: p.grad.detach().float() / loss_scale for n, p in parameters.items() if p.grad is not None}
        if loss_scale != 1.0 and not all(torch.isfinite(g).all() for g in grads.values()):
            skipped += 1
            continue
        for n, g in grads.items():
            fisher[n] += g ** 2
        count += 1
    model.zero_grad()
    model.train(was_training)
    if skipped:
        print(f"warning: EWC Fisher: {skipped} of {skipped + count} batches overflowed at loss scale {loss_scale} "
              "and were left out" + ("; the Fisher is all zeros, so EWC will not hold this task" if not count else ""),
              file=sys.stderr)
    return {n: f / max(count, 1) for n, f in fisher.items()}


def load_state(adapter_dir, device):
    path = os.path.join(adapter_dir, EWC_STATE)
    if not os.path.isfile(path):
        return None
    state = load_plain(path, map_location=device)
    return state["fisher"], state["theta_prev"]
