"""Backbone-independent training of one task: arguments, Trainer, adapter and run_info.json.

The per-backbone scripts load the model and tokenizer and turn records into features; the
rest (batch arithmetic, Trainer settings of the released recipe, saving) is here, once.
"""

import os
import shutil
import signal
import sys

from .errors import InputError, write_failed
from .flags import check_base_model, in_range, non_negative, positive
from .methods.ewc import FISHER_ESTIMATES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LR_SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine")


def gradient_accumulation(batch_size, micro_batch_size, world_size):
    """Per-rank accumulation steps of the released recipe: batch_size // micro_batch_size // world_size."""
    if batch_size < 1 or micro_batch_size < 1 or batch_size % (micro_batch_size * world_size):
        raise InputError(
            f"--batch_size {batch_size} must be a positive multiple of --micro_batch_size {micro_batch_size} "
            f"x world size {world_size}"
        )
    return batch_size // micro_batch_size // world_size


def check_training_flags(s):
    """The flags both training scripts share, checked before any file is read or model loaded."""
    check_base_model(s["base_model"])
    for flag in ("lora_r", "batch_size", "micro_batch_size", "eval_batch_size", "eval_steps", "logging_steps",
                 "max_input_length",
                 "max_target_length", "cutoff_len"):
        if flag in s:
            positive(flag, s[flag], integer=True)
    positive("lora_alpha", s["lora_alpha"])
    positive("learning_rate", s["learning_rate"])
    in_range("lora_dropout", s["lora_dropout"], 0, 1, high_open=True)
    non_negative("warmup_steps", s["warmup_steps"], integer=True)
    non_negative("task_id", s["task_id"], integer=True)
    in_range("memory_data_ratio", s["memory_data_ratio"], 0, 100)
    for flag in ("val_set_size", "seed"):
        non_negative(flag, s[flag], integer=True)
    if s["max_steps"] != -1:  # -1: train for num_epochs
        non_negative("max_steps", s["max_steps"], integer=True)
    non_negative("num_epochs", s["num_epochs"])
    if s["lr_scheduler_type"] not in LR_SCHEDULERS:
        raise InputError(f"--lr_scheduler_type: expected one of {LR_SCHEDULERS}, got {s['lr_scheduler_type']!r}")
    for flag in ("lambda_orth", "lambda_l2", "ewc_lambda"):
        non_negative(flag, s[flag])
    if s["ewc_fisher"] not in FISHER_ESTIMATES:
        raise InputError(f"--ewc_fisher: expected one of {FISHER_ESTIMATES}, got {s['ewc_fisher']!r}")
    parse_report_to(s["report_to"])
    check_tf32(s["tf32"])
    if not (s["max_steps"] > 0 or s["num_epochs"] > 0):
        raise InputError(f"--num_epochs {s['num_epochs']} with --max_steps {s['max_steps']}: no training step "
                         "would happen; give --num_epochs > 0 (or --max_steps > 0)")


def set_up_devices(world_size):
    """One GPU per process, chosen before anything touches CUDA.

    Under torchrun each rank takes its LOCAL_RANK's GPU at once: peft 0.4.0 loads a saved adapter
    onto the current device, which would otherwise be GPU 0 for every rank. A single process that
    sees several GPUs is refused: the Trainer would wrap the model in DataParallel, multiplying the
    effective batch by the number of GPUs without a word (and run_info.json would record the wrong one).
    """
    import torch

    if not torch.cuda.is_available():
        return
    n = torch.cuda.device_count()
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= n:
            raise InputError(f"LOCAL_RANK {local_rank}, but this process sees {n} GPU(s): give torchrun "
                             f"--nproc_per_node at most the number of GPUs (CUDA_VISIBLE_DEVICES)")
        torch.cuda.set_device(local_rank)
    elif n > 1:
        raise InputError(
            f"this process sees {n} GPUs (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}) and "
            f"the Trainer would run it as DataParallel, multiplying the effective batch by {n} silently; run one "
            f"process per GPU with torchrun --nproc_per_node {n} (see \"Several GPUs\"), or give it one GPU with "
            "CUDA_VISIBLE_DEVICES (the grid scripts' GPU=)")


def resolve_resume(resume_from_checkpoint, output_dir):
    """The checkpoint to resume from, or None to start at step 0.

    None / False: step 0. A folder: that checkpoint, which must be complete. True (the flag alone):
    the newest complete checkpoint of the task folder (newer incomplete ones are skipped with a
    warning). "auto" (what the grid scripts and run_pipeline.py pass): the same, or step 0 when
    the task folder holds none.
    """
    from .checkpoints import incomplete_reason, newest_complete_checkpoint

    if resume_from_checkpoint in (None, False, ""):
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == "auto":
        path, skipped = newest_complete_checkpoint(output_dir)
        for folder, reason in skipped:
            print(f"warning: skipping the incomplete {folder}: {reason}", file=sys.stderr)
        if path is None and resume_from_checkpoint is True:
            raise InputError(f"--resume_from_checkpoint: no complete checkpoint-N folder in {output_dir} to resume "
                             "from")
        return checked_plain(path)
    if not isinstance(resume_from_checkpoint, str) or not os.path.isdir(resume_from_checkpoint):
        raise InputError(f"--resume_from_checkpoint: {resume_from_checkpoint!r} is not a checkpoint folder "
                         "(give a checkpoint-N folder, the flag alone for the task's newest complete one, or auto)")
    reason = incomplete_reason(resume_from_checkpoint)
    if reason:
        raise InputError(f"--resume_from_checkpoint: {resume_from_checkpoint} is incomplete ({reason}), so the "
                         "task cannot resume exactly from it; give the flag alone to take the newest complete one")
    return checked_plain(resume_from_checkpoint)


def checked_plain(checkpoint):
    """The checkpoint, once every file the resume will unpickle has loaded as plain data (a crafted
    file stops the task here, before anything is loaded or written). training_args.bin is never read."""
    from .plain_data import check_plain

    if checkpoint is not None:
        check_plain(os.path.join(checkpoint, f) for f in sorted(os.listdir(checkpoint))
                    if f.endswith((".pt", ".pth", ".bin")) and f != "training_args.bin")
    return checkpoint


def kif_config(settings):
    """KIFConfig from a training script's flags (the released names; the flags 0/1 become booleans)."""
    from dataclasses import fields

    from .loop import KIFConfig

    values = {f.name: settings[f.name] for f in fields(KIFConfig)}
    for flag in ("empty_inner_score_flag", "empty_outer_score_flag"):
        values[flag] = bool(values[flag])
    try:
        return KIFConfig(**values)
    except ValueError as e:
        raise InputError(str(e)) from None


def training_precision(precision, backbone="llama"):
    """(fp16, bf16) Trainer flags. auto (LLaMA): fp32 on CPU; bf16 on a GPU that has it, else fp16.
    T5 takes fp32 (the released recipe) or bf16: its activations overflow float16."""
    import torch

    if backbone == "t5" and precision in ("fp16", "auto"):
        raise InputError(f"--precision {precision}: T5 overflows in float16 (its activations exceed the fp16 "
                         "range); use fp32 (default) or, on a GPU with bfloat16, bf16")
    choices = PRECISIONS if backbone == "llama" else ("fp32", "bf16")
    if precision not in choices:
        raise InputError(f"--precision must be one of {choices}, got {precision!r}")
    if precision == "auto":
        if not torch.cuda.is_available():
            return False, False
        return (False, True) if torch.cuda.is_bf16_supported() else (True, False)
    if precision != "fp32" and not torch.cuda.is_available():
        raise InputError(f"--precision {precision} needs a GPU; on CPU use fp32" + (" (or auto)" if backbone == "llama"
                                                                                    else ""))
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise InputError("--precision bf16: this GPU has no bfloat16 support; use fp32")
    return precision == "fp16", precision == "bf16"


REPORTERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def parse_report_to(value):
    """--report_to: none, or a comma-separated list of tensorboard and wandb (optional packages)."""
    import importlib.util

    names = [v.strip() for v in (value if isinstance(value, (list, tuple)) else str(value).split(",")) if v.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in REPORTERS]
    if unknown:
        raise InputError(f"--report_to: unknown {unknown[0]!r}; expected none, or tensorboard and/or wandb "
                         "(comma-separated)")
    for name in names:
        if not any(importlib.util.find_spec(m) for m in REPORTERS[name]):
            raise InputError(f"--report_to {name}: the optional {REPORTERS[name][0]} package is not installed "
                             f"(pip install {REPORTERS[name][0]})")
    return names


def check_tf32(tf32):
    import torch

    if tf32 and not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8):
        raise InputError("--tf32 needs an NVIDIA GPU of the Ampere generation or newer (compute capability 8+)")


def train_and_save(*, plan, model, features, data_collator, kif, settings, micro_batch_size,
                   gradient_accumulation_steps, world_size, num_epochs, max_steps, learning_rate, warmup_steps,
                   lr_scheduler_type="linear",
                   eval_steps, logging_steps, seed, resume_from_checkpoint, started, precision="fp32",
                   group_by_length=False, eval_batch_size=8, backbone="t5", tf32=False, report_to="none",
                   extra_loss=None, run_info_extra=None, gradient_checkpointing=False):
    """Train plan.task with the Recurrent-KIF Trainer and save the adapter with its run_info.json.

    features: list of records -> list of tokenized features (what data_collator takes).
    extra_loss: the method's extra loss term, callable(model), added to the training loss.
    run_info_extra: more entries for run_info.json (the backbone's own reports).
    """
    import torch
    import transformers

    from .adapters import save_adapter_atomically
    from .checkpoints import resume_hint
    from .continual import run_info_json
    from .methods import get_method
    from .methods.setup import end_of_task_files
    from .sampling import shuffled_like_released
    from .trainer import FeatureList, RecurrentKIFTrainer

    fp16, bf16 = training_precision(precision, backbone)
    # Several processes without a GPU (torchrun on CPU): transformers 4.28 wants no_cuda and a CPU
    # backend named explicitly; with GPUs it initialises NCCL itself.
    cpu_ddp = world_size > 1 and not torch.cuda.is_available()
    # Shuffled as the released scripts' data.shuffle() / memory_data.shuffle() do (numpy global RNG,
    # seeded by set_seed before the model was loaded), before the Trainer's own sampler.
    method = get_method(plan.method)
    train_data = shuffled_like_released(plan.train + (plan.memory if method.memory == "mixed" else []))
    memory = shuffled_like_released(plan.memory) if method.memory == "outer" else []
    validate = len(plan.validation) > 0
    args = transformers.TrainingArguments(
        output_dir=plan.output_dir,
        per_device_train_batch_size=micro_batch_size,
        per_device_eval_batch_size=eval_batch_size,  # the Trainer's default 8, as released
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=lr_scheduler_type,
        warmup_steps=warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        fp16=fp16,
        bf16=bf16,
        logging_steps=logging_steps,
        evaluation_strategy="steps" if validate else "no",
        eval_steps=eval_steps if validate else None,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=validate,
        metric_for_best_model="eval_loss" if validate else None,
        greater_is_better=False if validate else None,
        group_by_length=group_by_length,
        gradient_checkpointing=gradient_checkpointing,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        no_cuda=cpu_ddp,
        xpu_backend="gloo" if cpu_ddp else None,
        report_to=parse_report_to(report_to) or "none",
        tf32=tf32 or None,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=seed,
    )
    if gradient_checkpointing:
        # the base is frozen: without inputs that require grad, a checkpointed block would hand its
        # LoRA weights no gradient
        model.enable_input_require_grads()
    train_features = features(train_data)
    trainer = RecurrentKIFTrainer(
        model=model,
        args=args,
        train_dataset=FeatureList(train_features),
        eval_dataset=FeatureList(features(plan.validation)) if validate else None,
        data_collator=data_collator,
        kif_config=kif,
        memory_dataset=features(memory) if memory else None,
        extra_loss=extra_loss,
    )
    model.config.use_cache = False
    if resume_from_checkpoint:
        print(f"resuming task {plan.task_id}-{plan.task} from {resume_from_checkpoint} (step "
              f"{os.path.basename(resume_from_checkpoint).split('-')[-1]})")
    else:
        _clear_stale_checkpoints(plan.output_dir, trainer.args.should_save)
    trainer.stop_on_signal.install()
    try:
        result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    finally:
        trainer.stop_on_signal.uninstall()
    stopped = trainer.stop_on_signal.received
    if stopped and trainer.state.global_step < trainer.state.max_steps:
        print(f"interrupted by {signal.Signals(stopped).name} at step {trainer.state.global_step} of "
              f"{trainer.state.max_steps}: {plan.output_dir}/checkpoint-{trainer.state.global_step} is saved; to "
              "resume, run the same command with --resume_from_checkpoint (the grid scripts and run_pipeline.py "
              "resume by themselves)", file=sys.stderr, flush=True)
        raise SystemExit(128 + stopped)

    if trainer.args.should_save:
        info = run_info_json(
            settings, world_size=world_size, micro_batch_size=micro_batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps, started=started,
            extra={"task": plan.task, "order": plan.tasks, "previous_adapter": plan.previous_adapter,
                   "precision": {"fp16": fp16, "bf16": bf16},
                   "num_train_examples": len(train_data), "num_validation_examples": len(plan.validation),
                   "global_steps": trainer.state.global_step, "train_metrics": result.metrics,
                   "best_model_checkpoint": trainer.state.best_model_checkpoint,
                   "best_eval_loss": trainer.state.best_metric, "kif": trainer.kif_summary(),
                   "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
                   "peak_host_memory_gib": peak_host_memory_gib(),
                   **(run_info_extra or {})},
        )
        extra = end_of_task_files(method, trainer, plan, train_features, micro_batch_size,
                                  settings.get("ewc_fisher", "per_example"))
        try:
            save_adapter_atomically(model, plan.output_dir, {"run_info.json": info, **extra})
        except (OSError, RuntimeError) as e:
            error = write_failed(e, plan.output_dir, f"The task's adapter was not saved (no adapter_model.bin in "
                                 f"{plan.output_dir}). {resume_hint(plan.output_dir)}")
            if error is None:
                raise
            raise error from None
        print(f"saved adapter of task {plan.task_id}-{plan.task} to {plan.output_dir}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if stopped:  # the signal came after the last step: the task is saved, the job still stops
        raise SystemExit(128 + stopped)
    return trainer


def peak_host_memory_gib():
    """This process's peak resident memory (host RAM), GiB."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)  # ru_maxrss is KiB on Linux


def _clear_stale_checkpoints(output_dir, should_save):
    """A task started at step 0 drops the checkpoints of an earlier unfinished run of it, which would
    otherwise mix with the new ones (rotation, resuming)."""
    from .checkpoints import checkpoint_folders

    stale = checkpoint_folders(output_dir)
    if stale and should_save:
        print(f"starting {output_dir} at step 0: removing {len(stale)} checkpoints of an earlier run "
              f"({', '.join(os.path.basename(p) for p in stale)})")
        for path in stale:
            shutil.rmtree(path)


def print_settings(title, settings, plan, micro_batch_size, gradient_accumulation_steps, world_size):
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        return
    print(f"{title}:\n" + "\n".join(f"  {k}: {v}" for k, v in settings.items()))
    print(f"  task: {plan.task_id}-{plan.task} of order {plan.order_name} {plan.tasks}")
    print(f"  train examples: {len(plan.train)}, memory: {len(plan.memory)}, validation: {len(plan.validation)}")
    print(f"  effective batch: {micro_batch_size} x {gradient_accumulation_steps} accumulation x {world_size} ranks")
    print(f"  previous adapter: {plan.previous_adapter}\n  output: {plan.output_dir}")
