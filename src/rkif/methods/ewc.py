"""EWC on the LoRA parameters: a running diagonal Fisher and the parameters after the previous task.

After each task the diagonal Fisher of the LoRA parameters (model in eval mode, as training's
forward ran: same autocast, fp16 loss scale undone) is added to the running Fisher; training of
later tasks adds (ewc_lambda / 2) * sum F * (theta - theta_prev)^2 to the loss. Both are saved
beside the adapter as ewc_state.pt and read by the next task.

Two estimates (--ewc_fisher):
- per_example (default): the empirical Fisher, the mean over the task's training examples of the
  squared gradient of each example's own loss (its mean token loss). It does not depend on how
  examples are batched, so ewc_lambda means the same for T5 (micro-batch 2) and LLaMA (16). The
  per-example gradients of a chunk of examples come from one forward and backward: every LoRA
  weight is a bias-free Linear, whose gradient for example i is the sum over its tokens of
  (gradient at the output) x (input)^T, so hooks keep each layer's input and output gradient.
- batch: the mean over micro-batches of the squared gradient of the micro-batch loss (this
  project's estimate before; its scale shrinks as the micro-batch grows).
"""

import contextlib
import os
import sys

import torch

from ..plain_data import load_plain

EWC_STATE = "ewc_state.pt"
FISHER_ESTIMATES = ("per_example", "batch")
FISHER_CHUNK = 8  # examples per forward/backward of the per-example Fisher (memory, not the result)


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


def batch_fisher(model, batches, parameters, autocast=contextlib.nullcontext, loss_scale=1.0):
    """{name: mean over batches of grad^2} of the batch loss, for the given {name: parameter} (--ewc_fisher batch).

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
    _report_overflow(skipped, skipped + count, "batches", loss_scale)
    return {n: f / max(count, 1) for n, f in fisher.items()}


def per_example_losses(model, batch):
    """Each example's own loss, [batch]: the mean over its label tokens of the token cross-entropy, as
    the model's loss would be for the example alone (0 for an example without label tokens)."""
    outputs = model(**batch)
    logits, labels = outputs.logits.float(), batch["labels"]
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", True):  # causal: predict token t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    token_losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                     reduction="none")
    return token_losses.sum(1) / (labels != -100).sum(1).clamp(min=1)


def _linear_of(model, name, parameter):
    module = model.get_submodule(name.rsplit(".", 1)[0])
    if not (isinstance(module, torch.nn.Linear) and module.weight is parameter and module.bias is None):
        raise ValueError(f"per-example Fisher: {name} is not the weight of a bias-free Linear (a LoRA weight)")
    return module


def per_example_fisher(model, chunks, parameters, autocast=contextlib.nullcontext, loss_scale=1.0):
    """{name: mean over examples of (d loss_i / d parameter)^2}, loss_i = per_example_losses; chunks
    are collated batches of examples, whose size changes nothing but memory and speed.

    loss_scale: the fp16 scaler's scale, multiplied into the losses and divided out of the gradients
    (in fp32) before squaring; a chunk whose scaled gradients overflow is left out.
    """
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in parameters.items()}
    modules = {_linear_of(model, n, p): n for n, p in parameters.items()}
    chunk_grads = {}

    def keep_input(module, args, output):
        x, name = args[0].detach(), modules[module]

        def add_per_example_grad(grad_output):
            b = grad_output.shape[0]
            g = torch.einsum("bto,bti->boi", grad_output.float().reshape(b, -1, module.out_features) / loss_scale,
                             x.float().reshape(b, -1, module.in_features))
            chunk_grads[name] = chunk_grads[name] + g if name in chunk_grads else g  # a layer called twice: summed

        output.register_hook(add_per_example_grad)

    handles = [m.register_forward_hook(keep_input) for m in modules]
    was_training = model.training
    model.eval()
    count = skipped = 0
    try:
        for batch in chunks:
            model.zero_grad()
            chunk_grads.clear()
            with autocast():
                losses = per_example_losses(model, batch)
            (losses.sum() * loss_scale).backward()
            if loss_scale != 1.0 and not all(torch.isfinite(g).all() for g in chunk_grads.values()):
                skipped += len(losses)
                continue
            for n, g in chunk_grads.items():
                sums[n] += (g ** 2).sum(0)
            count += len(losses)
    finally:
        for h in handles:
            h.remove()
        chunk_grads.clear()
        model.zero_grad()
        model.train(was_training)
    _report_overflow(skipped, skipped + count, "examples", loss_scale)
    return {n: v / max(count, 1) for n, v in sums.items()}


def _report_overflow(skipped, total, what, loss_scale):
    if skipped:
        print(f"warning: EWC Fisher: {skipped} of {total} {what} overflowed at loss scale {loss_scale} and were left "
              "out" + ("; the Fisher is all zeros, so EWC will not hold this task" if skipped == total else ""),
              file=sys.stderr)


def load_state(adapter_dir, device):
    path = os.path.join(adapter_dir, EWC_STATE)
    if not os.path.isfile(path):
        return None
    state = load_plain(path, map_location=device)
    # states saved before the per-example estimate existed hold the batch one
    return state["fisher"], state["theta_prev"], state.get("fisher_estimate", "batch")
