"""EWC on the LoRA parameters: a running diagonal Fisher and the parameters after the previous task.

After each task the diagonal Fisher of the LoRA parameters (the mean over the task's training
batches of the squared gradient of the task loss, model in eval mode) is added to the running
Fisher; training of later tasks adds (ewc_lambda / 2) * sum F * (theta - theta_prev)^2 to the
loss. Both are saved beside the adapter as ewc_state.pt and read by the next task.
"""

import os

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


def diagonal_fisher(model, batches, parameters):
    """{name: mean over batches of grad^2} of the task loss, for the given {name: parameter}."""
    fisher = {n: torch.zeros_like(p) for n, p in parameters.items()}
    was_training = model.training
    model.eval()
    count = 0
    for batch in batches:
        model.zero_grad()
        model(**batch).loss.backward()
        for n, p in parameters.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        count += 1
    model.zero_grad()
    model.train(was_training)
    return {n: f / max(count, 1) for n, f in fisher.items()}


def load_state(adapter_dir, device):
    path = os.path.join(adapter_dir, EWC_STATE)
    if not os.path.isfile(path):
        return None
    state = load_plain(path, map_location=device)
    return state["fisher"], state["theta_prev"]
