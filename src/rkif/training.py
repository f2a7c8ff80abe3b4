"""Training one task, for either backbone: the command line, the checks, the Trainer run, the saved adapter.

    train = training_command(T5)     # what src/finetune_KIF_t5lora.py runs (rkif.commands)

training_command builds the command from the declared settings (rkif.settings); train_task is the
one skeleton both backbones go through: recipe, checks, task plan, folder lock, resume, model
(rkif.backbones), LoRA and the method's setup, then train_and_save, which holds the Trainer
settings of the released recipe and writes the adapter with its run_info.json.
"""

import importlib.util
import inspect
import os
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import torch
import transformers
from peft import TaskType
from transformers import DataCollatorForSeq2Seq

from . import compat
from .adapters import adapter_exists, save_adapter_atomically
from .backbones import BACKBONES
from .checkpoints import (check_world_size, checkpoint_folders, incomplete_reason, newest_complete_checkpoint,
                          resume_hint)
from .compat import training_arguments
from .errors import InputError, write_failed
from .folder_lock import hold_folder
from .lora import parse_target_modules
from .methods import METHOD_NAMES, get_method, setting_groups
from .base_model import check_base_model, check_tf32, training_precision
from .plain_data import check_plain
from .recipes import apply_recipe
from .run_info import run_info_json
from .sampling import shuffled_like_released
from .settings import KIFConfig, LoRASettings, RunSettings, TrainingSettings, command
from .task_plan import plan_task
from .tasks import resolve_order


def training_command(backbone):
    """The training script of a backbone: every declared training setting is a flag."""
    return command(lambda settings: train_task(backbone, settings),
                   (RunSettings, *setting_groups(), KIFConfig, TrainingSettings, LoRASettings, backbone.settings),
                   name="train", defaults=backbone.training_defaults, choices={"method_name": METHOD_NAMES},
                   doc=f"Continual {backbone.title} fine-tuning: one task of one order per call.")


TRAIN = {name: training_command(backbone) for name, backbone in BACKBONES.items()}  # the training scripts
TRAINING_FLAGS = tuple(dict.fromkeys(p for fn in TRAIN.values() for p in inspect.signature(fn).parameters))


@dataclass(frozen=True)
class LoRAShape:
    """A new adapter's LoRA (what Method.build reads)."""
    r: int
    alpha: float
    dropout: float
    target_modules: object
    task_type: object


@dataclass(frozen=True)
class BatchShape:
    micro_batch_size: int  # per device and forward/backward
    accumulation: int  # gradient accumulation steps per rank
    world_size: int  # ranks


def train_task(backbone, settings):
    """Train settings.training.task_id of the order with the backbone; settings: every flag of training_command,
    as its groups (rkif.settings.Settings)."""
    started = time.time()
    method = get_method(settings.run.method_name)
    settings, recipe_record = apply_recipe(settings, backbone.name, resolve_order(settings.run.dataset_id)[1],
                                           method)
    check_environment(settings)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    set_up_devices(world_size)
    settings = backbone.check(settings)
    run, training, lora = settings.run, settings.training, settings.lora
    fp16, bf16 = training_precision(training.precision, backbone.name)  # refused before anything is loaded
    batches = BatchShape(training.micro_batch_size,
                         gradient_accumulation(training.batch_size, training.micro_batch_size, world_size), world_size)
    target_modules = parse_target_modules(lora.lora_target_modules)
    method.check(settings, world_size)
    plan = plan_task(method_name=run.method_name, dataset_id=run.dataset_id, task_id=training.task_id,
                     data_dir=run.data_dir, output_path=run.output_path, base_model=run.base_model,
                     memory_data_ratio=settings.memory.memory_data_ratio, val_set_size=training.val_set_size,
                     seed=run.seed, recipe=run.recipe, suffix=backbone.file_suffix, fields=backbone.train_fields)
    if plan.nothing_to_do:
        print(plan.nothing_to_do)
        return
    # one process per task folder, from before the checkpoints are read until the adapter is saved
    with hold_folder(plan.output_dir):
        if adapter_exists(plan.output_dir):  # finished by the process that held the folder before us
            print(f"nothing to do: {plan.output_dir} holds the finished adapter of task {training.task_id}")
            return
        resume = resolve_resume(training.resume_from_checkpoint, plan.output_dir, batches.world_size)
        print_settings(f"Training {backbone.title} with", settings, plan, batches)

        transformers.set_seed(run.seed)
        model, tokenizer = backbone.load(settings, fp16, bf16)
        shape = LoRAShape(lora.lora_r, lora.lora_alpha, lora.lora_dropout, target_modules,
                          getattr(TaskType, backbone.task_type))
        model, extra_loss = method.build(model, plan, shape, settings)
        backbone.finish(model, tokenizer)
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:
            model.print_trainable_parameters()
        report = backbone.report(plan, tokenizer, settings)
        train_and_save(
            plan=plan, model=model, settings=settings, batches=batches, backbone=backbone,
            features=backbone.features(tokenizer, settings),
            data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True),
            resume_from_checkpoint=resume, started=started, extra_loss=extra_loss,
            run_info_extra={**report, "recipe": recipe_record})


def gradient_accumulation(batch_size, micro_batch_size, world_size):
    """Per-rank accumulation steps of the released recipe: batch_size // micro_batch_size // world_size."""
    if batch_size < 1 or micro_batch_size < 1 or batch_size % (micro_batch_size * world_size):
        raise InputError(
            f"--batch_size {batch_size} must be a positive multiple of --micro_batch_size {micro_batch_size} "
            f"x world size {world_size}"
        )
    return batch_size // micro_batch_size // world_size


def check_environment(settings):
    """What the groups cannot check by their values (rkif.settings): the base model folder, the optional
    reporters, TF32 on this machine; before any file is read or model loaded."""
    check_base_model(settings.run.base_model)
    parse_report_to(settings.training.report_to)
    check_tf32(settings.training.tf32)


def set_up_devices(world_size):
    """One GPU per process, chosen before anything touches CUDA.

    Under torchrun each rank takes its LOCAL_RANK's GPU at once: peft 0.4.0 loads a saved adapter
    onto the current device, which would otherwise be GPU 0 for every rank. A single process that
    sees several GPUs is refused: the Trainer would wrap the model in DataParallel, multiplying the
    effective batch by the number of GPUs without a word (and run_info.json would record the wrong one).
    """
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
            f"process per GPU with torchrun --nproc_per_node {n} (see docs/operations.md), or give it one GPU with "
            "CUDA_VISIBLE_DEVICES (the grid scripts' GPU=)")


def resolve_resume(resume_from_checkpoint, output_dir, world_size=1):
    """The checkpoint to resume from, or None to start at step 0; one saved by another number of ranks
    than world_size is refused (rkif.checkpoints.check_world_size), before any model loads.

    None / False: step 0. A folder: that checkpoint, which must be complete. True (the flag alone):
    the newest complete checkpoint of the task folder (newer incomplete ones are skipped with a
    warning). "auto" (what the grid scripts and run_pipeline.py pass): the same, or step 0 when
    the task folder holds none.
    """
    if resume_from_checkpoint in (None, False, ""):
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == "auto":
        path, skipped = newest_complete_checkpoint(output_dir)
        for folder, reason in skipped:
            print(f"warning: skipping the incomplete {folder}: {reason}", file=sys.stderr)
        if path is None and resume_from_checkpoint is True:
            raise InputError(f"--resume_from_checkpoint: no complete checkpoint-N folder in {output_dir} to resume "
                             "from")
        if path is not None:
            check_world_size(path, world_size)
        return checked_plain(path)
    if not isinstance(resume_from_checkpoint, str) or not os.path.isdir(resume_from_checkpoint):
        raise InputError(f"--resume_from_checkpoint: {resume_from_checkpoint!r} is not a checkpoint folder "
                         "(give a checkpoint-N folder, the flag alone for the task's newest complete one, or auto)")
    reason = incomplete_reason(resume_from_checkpoint)
    if reason:
        raise InputError(f"--resume_from_checkpoint: {resume_from_checkpoint} is incomplete ({reason}), so the "
                         "task cannot resume exactly from it; give the flag alone to take the newest complete one")
    check_world_size(resume_from_checkpoint, world_size)
    return checked_plain(resume_from_checkpoint)


def checked_plain(checkpoint):
    """The checkpoint, once every file the resume will unpickle has loaded as plain data (a crafted
    file stops the task here, before anything is loaded or written). training_args.bin is never read."""
    if checkpoint is not None:
        check_plain(os.path.join(checkpoint, f) for f in sorted(os.listdir(checkpoint))
                    if f.endswith((".pt", ".pth", ".bin")) and f != "training_args.bin")
    return checkpoint


REPORTERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def parse_report_to(value):
    """--report_to: none, or a comma-separated list of tensorboard and wandb (optional packages)."""
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


def train_and_save(*, plan, model, features, data_collator, settings, batches, backbone,
                   resume_from_checkpoint, started, extra_loss=None, run_info_extra=None):
    """Train plan.task with the Recurrent-KIF Trainer and save the adapter with its run_info.json.

    settings: every flag as its groups (recipe values filled in; run_info.json records them); batches:
    BatchShape. features: list of records -> list of tokenized features (what
    data_collator takes). extra_loss: the method's extra loss term, extra_loss(model, inputs, outputs),
    added to the training loss. run_info_extra: more entries for run_info.json (the backbone's own reports).
    """
    # the Trainer stack (transformers.trainer, accelerate, the loop): a second of imports that checking a
    # command's flags, --help and the other commands do without
    from .loop import FeatureList
    from .kif_trainer import RecurrentKIFTrainer

    training = settings.training
    fp16, bf16 = training_precision(training.precision, backbone.name)
    # Shuffled as the released scripts' data.shuffle() / memory_data.shuffle() do (numpy global RNG,
    # seeded by set_seed before the model was loaded), before the Trainer's own sampler.
    method = get_method(plan.method)
    train_data, memory = method.task_data(plan, shuffled_like_released)
    validate = len(plan.validation) > 0
    args = trainer_arguments(plan.output_dir, training, batches, validate, settings.run.seed, fp16, bf16)
    if training.gradient_checkpointing:
        # the base is frozen: without inputs that require grad, a (reentrant) checkpointed block would hand
        # its LoRA weights no gradient
        model.enable_input_require_grads()
        compat.non_reentrant_checkpointing()  # under DDP a penalty on the LoRA weights needs it
    train_features = features(train_data)
    trainer = RecurrentKIFTrainer(
        model=model,
        args=args,
        train_dataset=FeatureList(train_features),
        eval_dataset=FeatureList(features(plan.validation)) if validate else None,
        data_collator=data_collator,
        kif_config=settings.kif,
        memory_dataset=features(memory) if memory else None,
        extra_loss=extra_loss,
        step_tracker=method.step_tracker(settings),
    )
    model.config.use_cache = False
    result, stopped = run_trainer(trainer, plan, resume_from_checkpoint)
    if trainer.args.should_save:
        info = run_info_json(
            settings.values(), world_size=batches.world_size, micro_batch_size=batches.micro_batch_size,
            gradient_accumulation_steps=batches.accumulation, started=started,
            extra={"task": plan.task, "order": plan.tasks, "previous_adapter": plan.previous_adapter,
                   "precision": {"fp16": fp16, "bf16": bf16},
                   "num_train_examples": len(train_data), "num_validation_examples": len(plan.validation),
                   "global_steps": trainer.state.global_step, "train_metrics": result.metrics,
                   "best_model_checkpoint": trainer.state.best_model_checkpoint,
                   "best_eval_loss": trainer.state.best_metric, "kif": trainer.kif_summary(),
                   "gradient_checkpointing": compat.training_argument(trainer.args, "gradient_checkpointing"),
                   "peak_host_memory_gib": peak_host_memory_gib(),
                   **(run_info_extra or {})},
        )
        extra = method.end_of_task(trainer, plan, train_features, batches.micro_batch_size, settings)
        save_task(model, plan, {"run_info.json": info, **extra})
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if stopped:  # the signal came after the last step: the task is saved, the job still stops
        raise SystemExit(128 + stopped)
    return trainer


def run_trainer(trainer, plan, resume_from_checkpoint):
    """trainer.train, from the checkpoint or from scratch (stale checkpoints cleared), stoppable by SIGTERM /
    SIGINT: stopped before the last step, it exits 128 + the signal after saving a checkpoint. Returns
    (the train result, the signal received after the last step or None)."""
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
    return result, stopped


def save_task(model, plan, files):
    """The adapter and the files beside it, written at once (rkif.adapters); a failed write says what to do."""
    try:
        save_adapter_atomically(model, plan.output_dir, files)
    except (OSError, RuntimeError) as e:
        error = write_failed(e, plan.output_dir, f"The task's adapter was not saved (no adapter_model.bin in "
                             f"{plan.output_dir}). {resume_hint(plan.output_dir)}")
        if error is None:
            raise
        raise error from None
    print(f"saved adapter of task {plan.task_id}-{plan.task} to {plan.output_dir}")


def trainer_arguments(output_dir, training, batches, validate, seed, fp16, bf16):
    """The Trainer settings of the released recipe for one task (AdamW, no weight decay, clipping at 1,
    checkpoints every eval_steps keeping 2, the best by eval loss when validating)."""
    world_size = batches.world_size
    # Several processes without a GPU (torchrun on CPU): the Trainer wants no_cuda and a CPU backend named
    # explicitly; with GPUs it initialises NCCL itself. (Field names are 4.28.1's: rkif.compat renames.)
    cpu_ddp = world_size > 1 and not torch.cuda.is_available()
    return training_arguments(
        output_dir=output_dir,
        per_device_train_batch_size=batches.micro_batch_size,
        per_device_eval_batch_size=training.eval_batch_size,  # the Trainer's default 8, as released
        gradient_accumulation_steps=batches.accumulation,
        num_train_epochs=training.num_epochs,
        max_steps=training.max_steps,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.lr_scheduler_type,
        warmup_steps=training.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        fp16=fp16,
        bf16=bf16,
        logging_steps=training.logging_steps,
        evaluation_strategy="steps" if validate else "no",
        eval_steps=training.eval_steps if validate else None,
        save_strategy="steps",
        save_steps=training.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=validate,
        metric_for_best_model="eval_loss" if validate else None,
        greater_is_better=False if validate else None,
        group_by_length=training.group_by_length,
        gradient_checkpointing=training.gradient_checkpointing,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        no_cuda=cpu_ddp,
        xpu_backend="gloo" if cpu_ddp else None,
        report_to=parse_report_to(training.report_to) or "none",
        tf32=training.tf32 or None,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=seed,
    )


def peak_host_memory_gib():
    """This process's peak resident memory (host RAM), GiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)  # ru_maxrss is KiB on Linux


def _clear_stale_checkpoints(output_dir, should_save):
    """A task started at step 0 drops the checkpoints of an earlier unfinished run of it, which would
    otherwise mix with the new ones (rotation, resuming)."""
    stale = checkpoint_folders(output_dir)
    if stale and should_save:
        print(f"starting {output_dir} at step 0: removing {len(stale)} checkpoints of an earlier run "
              f"({', '.join(os.path.basename(p) for p in stale)})")
        for path in stale:
            shutil.rmtree(path)


def print_settings(title, settings, plan, batches):
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        return
    print(f"{title}:\n" + "\n".join(f"  {k}: {v}" for k, v in settings.values().items()))
    print(f"  task: {plan.task_id}-{plan.task} of order {plan.order_name} {plan.tasks}")
    print(f"  train examples: {len(plan.train)}, memory: {len(plan.memory)}, validation: {len(plan.validation)}")
    print(f"  effective batch: {batches.micro_batch_size} x {batches.accumulation} accumulation x "
          f"{batches.world_size} ranks")
    print(f"  previous adapter: {plan.previous_adapter}\n  output: {plan.output_dir}")
