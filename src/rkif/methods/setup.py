"""Wiring a method into one task: the adapter it trains, its extra loss, what it saves at the end."""

import torch

from .. import compat
from ..errors import InputError
from . import ewc, olora


def prepare_task_model(method, base, plan, *, r, alpha, dropout, target_modules, task_type, settings):
    """(the task's PeftModel, extra loss callable(model) or None)."""
    from peft import PeftModel

    from ..lora import new_lora_model

    previous = plan.previous_adapter
    if method.branches:
        t = plan.task_id
        if previous:  # the branches keep the first task's rank, alpha and targets
            r, alpha, target_modules = olora.previous_branches(previous, t)
        model = new_lora_model(base, r=r * (t + 1), alpha=alpha * (t + 1), dropout=dropout,
                               target_modules=target_modules, task_type=task_type)
        if previous:
            olora.copy_previous_branches(model, previous, r * t)
            olora.freeze_previous_branches(model, r * t)
        lambda_orth = settings["lambda_orth"] if method.name == "OLoRA" else 0.0
        return model, olora.branch_penalty(r * t, lambda_orth, settings["lambda_l2"])
    if previous:
        model = PeftModel.from_pretrained(base, previous, is_trainable=True)
    else:
        model = new_lora_model(base, r=r, alpha=alpha, dropout=dropout, target_modules=target_modules,
                               task_type=task_type)
    if method.ewc and previous:
        device = next(p for n, p in model.named_parameters() if "lora_" in n).device
        state = ewc.load_state(previous, device)
        if state is None:
            raise InputError(f"{previous}: no {ewc.EWC_STATE} beside the adapter; was task {plan.task_id - 1} "
                             "trained with --method_name EWC?")
        fisher, theta_prev, estimate = state
        if estimate != settings.get("ewc_fisher", "per_example"):
            raise InputError(f"{previous}: the running Fisher so far is the {estimate} estimate, this task would add "
                             f"the {settings.get('ewc_fisher', 'per_example')} one; continue the sequence with "
                             f"--ewc_fisher {estimate} (and the ewc_lambda it was trained with), or restart it")
        return model, lambda m: ewc.ewc_penalty(m, fisher, theta_prev, settings["ewc_lambda"])
    return model, None


def end_of_task_files(method, trainer, plan, features, micro_batch_size, fisher_estimate="per_example"):
    """{file name: writer(path)} saved beside the adapter (EWC: the running Fisher and theta)."""
    if not method.ewc:
        return {}
    from ..adapters import lora_parameters

    model = trainer.model
    params = lora_parameters(model)
    device = next(iter(params.values())).device
    size = ewc.FISHER_CHUNK if fisher_estimate == "per_example" else micro_batch_size
    batches = (trainer._prepare_inputs(trainer.data_collator([dict(f) for f in features[i:i + size]]))
               for i in range(0, len(features), size))
    scaler = compat.grad_scaler(trainer)
    scale = 1.0
    if scaler is not None:
        accumulation = getattr(getattr(trainer, "args", None), "gradient_accumulation_steps", 1)
        scale = ewc.fisher_loss_scale(scaler.get_scale(), micro_batch_size, accumulation,
                                      per_example=fisher_estimate == "per_example")
    estimate = ewc.per_example_fisher if fisher_estimate == "per_example" else ewc.batch_fisher
    fisher = estimate(model, batches, params, trainer.compute_loss_context_manager, scale, fp16=scaler is not None)
    previous = ewc.load_state(plan.previous_adapter, device) if plan.previous_adapter else None
    if previous:
        fisher = {n: f + previous[0][n] for n, f in fisher.items()}
    state = {"fisher": {n: f.detach().cpu() for n, f in fisher.items()},
             "theta_prev": {n: p.detach().clone().cpu() for n, p in params.items()},
             "fisher_estimate": fisher_estimate}
    return {ewc.EWC_STATE: lambda path: torch.save(state, path)}
