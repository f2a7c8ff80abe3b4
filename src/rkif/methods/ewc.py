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

from .. import compat
from ..adapters import lora_parameters
from ..errors import InputError
from ..plain_data import load_plain
from ..settings import EWCSettings
from .base import Method

EWC_STATE = "ewc_state.pt"
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


def fisher_loss_scale(training_scale, micro_batch_size, accumulation_steps, per_example=True):
    """The fp16 loss scale for the Fisher's backward: training's, shared as training shares it.

    Training's backward runs a micro-batch's mean loss divided by the accumulation steps, at the
    scaler's scale; a per-example loss (the mean over one example's tokens) weights each of its tokens
    about micro_batch_size x accumulation_steps times more, and a micro-batch loss (the batch estimate)
    accumulation_steps times more. Multiplying by training's scale would overflow where training did
    not (measured on a tiny T5, fp16: every chunk left out, an all-zero Fisher); this scale gives each
    token the weight it had in training.
    """
    return training_scale / (accumulation_steps * (micro_batch_size if per_example else 1))


MAX_HALVINGS = 24  # non-finite after this many halvings of the scale: not an overflow (a NaN in the model)


def _scaled_backward(grads_at, loss_scale, fp16):
    """grads_at(scale): a fresh forward and backward at that loss scale, returning the gradients with the
    scale divided out. Halves the scale and tries again while they overflow, as the fp16 scaler backs
    off (only under fp16: in fp32 there is no scaling to back off). Returns (gradients, the scale to go on
    with, halvings); gradients are None when non-finite at every scale tried (and the scale to go on with
    is the one given)."""
    for halvings in range(MAX_HALVINGS + 1 if fp16 else 1):
        grads = grads_at(loss_scale / 2 ** halvings)
        if all(torch.isfinite(g).all() for g in grads.values()):
            return grads, loss_scale / 2 ** halvings, halvings
    return None, loss_scale, 0


def batch_fisher(model, batches, parameters, autocast=contextlib.nullcontext, loss_scale=1.0, fp16=None):
    """{name: mean over batches of grad^2} of the batch loss, for the given {name: parameter} (--ewc_fisher batch).

    autocast: the context training ran its forward in (the Trainer's compute_loss_context_manager),
    so the Fisher sees the model as training did. loss_scale: the fp16 loss scale (fisher_loss_scale);
    the loss is multiplied by it so that small gradients do not underflow in fp16, and the gradients are
    divided by it again (in fp32) before squaring. A batch whose gradients overflow is redone at half
    the scale, and the lower scale kept; one non-finite at every scale is left out.
    """
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in parameters.items()}
    was_training = model.training
    model.eval()
    count = skipped = lowered = 0
    start_scale = failed_from = loss_scale
    fp16 = loss_scale != 1.0 if fp16 is None else fp16  # (callers that pass only a scale: scaling is on)
    for batch in batches:
        def grads_at(scale):
            model.zero_grad()
            with autocast():
                loss = model(**batch).loss
            (loss * scale).backward()
            return {n: p.grad.detach().float() / scale for n, p in parameters.items() if p.grad is not None}

        grads, loss_scale, halvings = _scaled_backward(grads_at, loss_scale, fp16)
        if grads is None:
            skipped += 1
            failed_from = loss_scale
            continue
        lowered += halvings
        for n, g in grads.items():
            fisher[n] += g ** 2
        count += 1
    model.zero_grad()
    model.train(was_training)
    _report_overflow(skipped, skipped + count, "batches", start_scale, loss_scale if lowered else None, failed_from,
                     fp16)
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


def per_example_fisher(model, chunks, parameters, autocast=contextlib.nullcontext, loss_scale=1.0, fp16=None):
    """{name: mean over examples of (d loss_i / d parameter)^2}, loss_i = per_example_losses; chunks
    are collated batches of examples, whose size changes nothing but memory and speed.

    loss_scale: the fp16 loss scale for a per-example loss (fisher_loss_scale), multiplied into the
    losses and divided out of the gradients (in fp32) before squaring. A chunk whose gradients overflow
    is redone at half the scale, and the lower scale kept; one non-finite at every scale is left out.
    """
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in parameters.items()}
    modules = {_linear_of(model, n, p): n for n, p in parameters.items()}
    chunk_grads = {}
    current = {"scale": loss_scale}
    start_scale = failed_from = loss_scale
    fp16 = loss_scale != 1.0 if fp16 is None else fp16  # (callers that pass only a scale: scaling is on)

    def keep_input(module, args, output):
        x, name = args[0].detach(), modules[module]

        def add_per_example_grad(grad_output):
            b = grad_output.shape[0]
            g = torch.einsum("bto,bti->boi", grad_output.float().reshape(b, -1, module.out_features) / current["scale"],
                             x.float().reshape(b, -1, module.in_features))
            chunk_grads[name] = chunk_grads[name] + g if name in chunk_grads else g  # a layer called twice: summed

        output.register_hook(add_per_example_grad)

    handles = [m.register_forward_hook(keep_input) for m in modules]
    was_training = model.training
    model.eval()
    count = skipped = lowered = 0
    try:
        for batch in chunks:
            def grads_at(scale):
                model.zero_grad()
                chunk_grads.clear()
                current["scale"] = scale
                with autocast():
                    losses = per_example_losses(model, batch)
                (losses.sum() * scale).backward()
                return dict(chunk_grads)

            grads, loss_scale, halvings = _scaled_backward(grads_at, loss_scale, fp16)
            size = len(batch["labels"])
            if grads is None:
                skipped += size
                failed_from = loss_scale
                continue
            lowered += halvings
            for n, g in grads.items():
                sums[n] += (g ** 2).sum(0)
            count += size
    finally:
        for h in handles:
            h.remove()
        chunk_grads.clear()
        model.zero_grad()
        model.train(was_training)
    _report_overflow(skipped, skipped + count, "examples", start_scale, loss_scale if lowered else None,
                     failed_from, fp16)
    return {n: v / max(count, 1) for n, v in sums.items()}


def _report_overflow(skipped, total, what, loss_scale, lowered_to=None, failed_from=None, fp16=False):
    if lowered_to is not None:
        print(f"EWC Fisher: fp16 gradients overflowed at loss scale {loss_scale}; lowered to {lowered_to}",
              file=sys.stderr)
    if skipped:
        print(f"warning: EWC Fisher: {skipped} of {total} {what} had non-finite gradients"
              + (f" at loss scales down to {(failed_from or loss_scale) / 2 ** MAX_HALVINGS}" if fp16 else "")
              + " and were left out"
              + ("; the Fisher is all zeros, so EWC will not hold this task" if skipped == total else ""),
              file=sys.stderr)


def load_state(adapter_dir, device):
    path = os.path.join(adapter_dir, EWC_STATE)
    if not os.path.isfile(path):
        return None
    state = load_plain(path, map_location=device)
    # states saved before the per-example estimate existed hold the batch one
    return state["fisher"], state["theta_prev"], state.get("fisher_estimate", "batch")


class EWC(Method):
    """The running Fisher and theta after the previous task, saved beside each adapter; the penalty on
    the next task's LoRA parameters."""
    name = "EWC"
    settings = (EWCSettings,)
    state_files = (EWC_STATE,)

    def build(self, base, plan, lora, settings):
        model, _ = super().build(base, plan, lora, settings)
        if not plan.previous_adapter:
            return model, None
        ewc = settings.ewc
        device = next(p for n, p in model.named_parameters() if "lora_" in n).device
        state = load_state(plan.previous_adapter, device)
        if state is None:
            raise InputError(f"{plan.previous_adapter}: no {EWC_STATE} beside the adapter; was task "
                             f"{plan.task_id - 1} trained with --method_name EWC?")
        fisher, theta_prev, estimate = state
        if estimate != ewc.ewc_fisher:
            raise InputError(f"{plan.previous_adapter}: the running Fisher so far is the {estimate} estimate, this "
                             f"task would add the {ewc.ewc_fisher} one; continue the sequence with --ewc_fisher "
                             f"{estimate} (and the ewc_lambda it was trained with), or restart it")
        return model, lambda m, inputs=None, outputs=None: ewc_penalty(m, fisher, theta_prev, ewc.ewc_lambda)

    def end_of_task(self, trainer, plan, features, micro_batch_size, settings):
        fisher_estimate = settings.ewc.ewc_fisher
        model = trainer.model
        params = lora_parameters(model)
        device = next(iter(params.values())).device
        size = FISHER_CHUNK if fisher_estimate == "per_example" else micro_batch_size
        batches = (trainer._prepare_inputs(trainer.data_collator([dict(f) for f in features[i:i + size]]))
                   for i in range(0, len(features), size))
        scaler = compat.grad_scaler(trainer)
        scale = 1.0
        if scaler is not None:
            accumulation = getattr(getattr(trainer, "args", None), "gradient_accumulation_steps", 1)
            scale = fisher_loss_scale(scaler.get_scale(), micro_batch_size, accumulation,
                                      per_example=fisher_estimate == "per_example")
        estimate = per_example_fisher if fisher_estimate == "per_example" else batch_fisher
        fisher = estimate(model, batches, params, trainer.compute_loss_context_manager, scale, fp16=scaler is not None)
        previous = load_state(plan.previous_adapter, device) if plan.previous_adapter else None
        if previous:
            fisher = {n: f + previous[0][n] for n, f in fisher.items()}
        state = {"fisher": {n: f.detach().cpu() for n, f in fisher.items()},
                 "theta_prev": {n: p.detach().clone().cpu() for n, p in params.items()},
                 "fisher_estimate": fisher_estimate}
        return {EWC_STATE: lambda path: torch.save(state, path)}
