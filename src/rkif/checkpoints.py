"""Checkpoints that hold adapters, are known to be complete, and survive interruptions.

- Checkpoints save and reload the LoRA adapter, not the full model (peft 0.4.0 under the
  stock 4.28.1 Trainer would otherwise save the whole model or, as released, nothing).
- A checkpoint is complete when every rank has written every file of it; rank 0 then writes
  ``checkpoint_complete.json`` (each file's name and size) last, and only then are older
  checkpoints rotated away, incomplete ones first. A kill at any moment therefore leaves the
  newest complete checkpoint on disk.
- SIGTERM / SIGINT during training finish the current optimizer step (and its outer loop
  and fusion), save a complete checkpoint and stop; the script then exits non-zero.
"""

import json
import os
import random
import re
import shutil
import signal
import sys

import numpy as np
import torch
from peft import PeftModel
from transformers.modeling_utils import unwrap_model
from transformers.trainer_callback import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from . import compat
from .adapters import ADAPTER_WEIGHTS, load_adapter_weights
from .errors import InputError, write_failed
from .plain_data import load_plain

COMPLETE = "checkpoint_complete.json"
TRAINING_ARGS_NAME = "training_args.bin"  # as transformers.trainer names it


def required_files(world_size, extra_per_rank=()):
    """What a complete checkpoint of this project holds (besides the marker)."""
    rng = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth" for r in range(world_size)]
    per_rank = [pattern.format(r) for pattern in extra_per_rank for r in range(world_size)]
    return [ADAPTER_WEIGHTS, "optimizer.pt", "scheduler.pt", "trainer_state.json", *rng, *per_rank]


def write_complete_marker(checkpoint, step, required, world_size=1):
    """Record every file of ``checkpoint`` with its size and the number of ranks that wrote it, atomically,
    once ``required`` are all there."""
    missing = [f for f in required if not os.path.isfile(os.path.join(checkpoint, f))]
    if missing:
        raise RuntimeError(f"{checkpoint}: not marked complete, {missing} were not written")
    files = {f: os.path.getsize(os.path.join(checkpoint, f)) for f in sorted(os.listdir(checkpoint))
             if f != COMPLETE and os.path.isfile(os.path.join(checkpoint, f))}
    tmp = os.path.join(checkpoint, COMPLETE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"global_step": step, "world_size": world_size, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(checkpoint, COMPLETE))


def incomplete_reason(checkpoint):
    """None for a complete checkpoint, else what is wrong with it."""
    path = os.path.join(checkpoint, COMPLETE)
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError):
        return f"no {COMPLETE} (it was not finished)"
    for name, size in files.items():
        p = os.path.join(checkpoint, name)
        if not os.path.isfile(p):
            return f"{name} is missing"
        if os.path.getsize(p) != size:
            return f"{name} has {os.path.getsize(p)} bytes, {size} were written"
    return None


def saved_world_size(checkpoint):
    """How many ranks wrote a complete checkpoint: its marker's record, else (markers written before it was
    recorded) its RNG files: rng_state.pth alone is one rank, rng_state_{r}.pth one per rank."""
    with open(os.path.join(checkpoint, COMPLETE)) as f:
        marker = json.load(f)
    if "world_size" in marker:
        return int(marker["world_size"])
    per_rank = [f for f in marker["files"] if re.fullmatch(r"rng_state_\d+\.pth", f)]
    return len(per_rank) or 1


def check_world_size(checkpoint, world_size):
    """A resume runs on as many ranks as saved the checkpoint: each rank's RNG and share of the data order
    are in it, and a different count would either fail after every rank loaded the model or resume silently
    without them."""
    saved = saved_world_size(checkpoint)
    if saved != world_size:
        raise InputError(f"--resume_from_checkpoint: {checkpoint} was saved by {saved} rank(s) and this run has "
                         f"{world_size}; resume it on {saved} (torchrun --nproc_per_node {saved}, or one process for "
                         f"1), or move the task's checkpoint-N folders away to start the task again")


def checkpoint_folders(output_dir):
    """checkpoint-N folders of output_dir, by step."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for d in os.listdir(output_dir):
        m = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", d)
        if m and os.path.isdir(os.path.join(output_dir, d)):
            found.append((int(m.group(1)), os.path.join(output_dir, d)))
    return [path for _, path in sorted(found)]


def newest_complete_checkpoint(output_dir):
    """(newest complete checkpoint or None, [(newer incomplete checkpoint, reason)])."""
    skipped = []
    for path in reversed(checkpoint_folders(output_dir)):
        reason = incomplete_reason(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def resume_hint(output_dir):
    """Where a rerun of a task that stopped on an error picks up."""
    newest, _ = newest_complete_checkpoint(output_dir)
    if newest is None:
        return "There is no complete checkpoint yet: a rerun starts the task at step 0"
    return (f"A rerun resumes from {newest}, the newest complete checkpoint, with --resume_from_checkpoint "
            "(the grid scripts and run_pipeline.py pass it by themselves)")


class StopOnSignal(TrainerCallback):
    """SIGTERM / SIGINT: finish this optimizer step, save a checkpoint, stop training.

    The handlers only record the signal; at the end of the current optimizer step (after the
    outer loop and fusion, which run in an earlier on_step_end) the Trainer is told to save and
    stop. Under DDP the ranks agree on it at every step. A second signal acts at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None
        self._previous = {}

    def install(self):
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)

    def uninstall(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:  # asked twice: stop now
            self.uninstall()
            signal.raise_signal(signum)
            return
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: stopping after this optimizer step with a checkpoint "
              "(send it again to stop at once)", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.received is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(stop)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
            self.received = self.received or (signal.SIGTERM if stop else None)
        if stop:
            control.should_save = True
            control.should_training_stop = True
        return control


class TrainingAlreadyDone(Exception):
    """A run resumed from the checkpoint of its last step: nothing is left to train."""


class _ResumedAfterTheLastStep(TrainerCallback):
    """Stops a run resumed from its last step's checkpoint before it trains. Where that step falls mid-epoch the
    Trainer would skip the epoch's trained batches and train one step more before checking max_steps (a
    method with a step tracker checkpoints its last step, so an interruption after it reruns what follows
    training only)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.trainer._resumed_from is not None and state.global_step >= state.max_steps > 0:
            raise TrainingAlreadyDone


class AdapterCheckpointMixin:
    """transformers.Trainer checkpoints that hold the adapter and are marked complete when written.

    Subclasses add per-rank files through ``_save_extra_state(checkpoint)`` and name them in
    ``extra_checkpoint_files`` (patterns with {} for the rank).
    """

    extra_checkpoint_files = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resumed_from = None
        self._defer_rotation = False
        self.stop_on_signal = StopOnSignal()
        self.add_callback(self.stop_on_signal)
        self.add_callback(_ResumedAfterTheLastStep(self))

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        except TrainingAlreadyDone:
            # what the Trainer does after its last step; the checkpoint's weights and state are loaded already
            if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
                self._load_best_model()
            self.is_in_train = False
            return TrainOutput(self.state.global_step, 0.0, {"resumed_after_the_last_step": True})

    def _save_extra_state(self, checkpoint):
        pass

    def _save_checkpoint(self, model, trial, *args, **kwargs):  # 4.28.1 passes metrics too
        checkpoint = os.path.join(self._get_output_dir(trial=trial),
                                  f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and os.path.exists(os.path.join(checkpoint, COMPLETE)):
            os.remove(os.path.join(checkpoint, COMPLETE))  # rewritten below once every file is new
        try:
            self._defer_rotation = True
            try:
                with compat.rotation_held(self):
                    super()._save_checkpoint(model, trial, *args, **kwargs)
            finally:
                self._defer_rotation = False
            self._save_extra_state(checkpoint)
            if self.args.world_size > 1:
                torch.distributed.barrier()  # every rank's files are on disk
            if self.args.should_save:
                write_complete_marker(checkpoint, self.state.global_step,
                                      required_files(self.args.world_size, self.extra_checkpoint_files),
                                      self.args.world_size)
        except (OSError, RuntimeError) as e:
            error = write_failed(e, checkpoint, f"{checkpoint} stays incomplete and will be skipped; nothing complete "
                                 f"was removed. {resume_hint(os.path.dirname(checkpoint))}")
            if error is None:
                raise
            raise error from None
        if self.args.should_save:
            self._rotate_checkpoints(use_mtime=True, output_dir=os.path.dirname(checkpoint))

    def _rotate_checkpoints(self, use_mtime=False, output_dir=None):
        if self._defer_rotation:
            return  # rotated once the new checkpoint is complete
        if self.args.save_total_limit and self.args.save_total_limit > 0 and output_dir:
            for path in checkpoint_folders(output_dir):  # unusable anyway: never kept in place of a complete one
                if incomplete_reason(path) is not None:
                    shutil.rmtree(path, ignore_errors=True)
        compat.rotate_checkpoints(self, super(), output_dir, use_mtime)

    def _save(self, output_dir=None, state_dict=None):
        if not isinstance(unwrap_model(self.model), PeftModel):
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:  # 5.x calls _save on every rank
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        compat.save_adapter(unwrap_model(self.model), output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        self._resumed_from = resume_from_checkpoint  # subclasses restore their own state at train begin
        target = unwrap_model(model if model is not None else self.model)
        if not isinstance(target, PeftModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_adapter_weights(target, resume_from_checkpoint)

    def _load_rng_state(self, checkpoint):
        # transformers 4.28.1 reads this file with torch.load's default, which from torch 2.6 on is
        # weights_only=True and refuses the numpy RNG state the Trainer itself saved; load_plain
        # allows exactly that state's numpy types besides plain data.
        name = f"rng_state_{self.args.process_index}.pth" if self.args.world_size > 1 else "rng_state.pth"
        if checkpoint is None or not os.path.isfile(os.path.join(checkpoint, name)):
            return super()._load_rng_state(checkpoint)
        state = load_plain(os.path.join(checkpoint, name))
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.random.set_rng_state(state["cpu"])
        if torch.cuda.is_available() and "cuda" in state:
            try:  # as the stock Trainer: fewer GPUs visible than at save time must not stop a resume
                compat.restore_cuda_rng(state["cuda"], distributed=self.args.local_rank != -1)
            except Exception as e:  # noqa: BLE001 - IndexError for a missing device, RuntimeError for others
                print(f"warning: the GPU random states of {checkpoint} could not be restored ({e!r}); the task "
                      "resumes, but its dropout masks will differ from an uninterrupted run's", file=sys.stderr)

    def _load_best_model(self):
        if not isinstance(unwrap_model(self.model), PeftModel):
            return super()._load_best_model()
        load_adapter_weights(unwrap_model(self.model), self.state.best_model_checkpoint)
