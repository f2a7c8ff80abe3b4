"""RecurrentKIFTrainer: transformers.Trainer with the Recurrent-KIF loop, on the stock install.

The loop itself is rkif.loop.RecurrentKIFMixin; the patched transformers.Trainer of patches/
uses the same mixin.
"""

import os

import torch
from transformers import TrainerCallback
from transformers import trainer as _hf_trainer
from transformers.modeling_utils import unwrap_model

from . import compat
from .loop import RecurrentKIFMixin, on_parameter_devices
from .plain_data import load_plain

METHOD_STATE = "method_state_{}.pt"  # one per rank, as the loop's own state

# Under the patched install transformers.Trainer is already the keyword-API class built on this
# mixin; the subclass builds on the original Trainer either way.
_Trainer = getattr(_hf_trainer.Trainer, "rkif_original_trainer", _hf_trainer.Trainer)


class RecurrentKIFTrainer(RecurrentKIFMixin, _Trainer):
    """transformers.Trainer + Recurrent-KIF. Extra keywords: kif_config (KIFConfig), memory_dataset
    (tokenized features of the earlier tasks' memory; empty or None means plain training), extra_loss
    (extra_loss(model, inputs, outputs) -> a term added to each training micro-batch's loss: the methods'
    seam, rkif.methods.base), step_tracker (a method's state updated after every optimizer step,
    update(model, global_step), saved in every checkpoint and restored on resume; the task's last step is
    then always checkpointed, so that an interruption after training reruns only what follows it)."""

    def __init__(self, *args, extra_loss=None, step_tracker=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_loss = extra_loss
        self.step_tracker = step_tracker
        self._tracker_hook = None
        if step_tracker is not None:
            self.add_callback(_StepTrackerCallback(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.extra_loss is None or not model.training:  # evaluation losses stay the task's
            return super().compute_loss(model, inputs, return_outputs=return_outputs)
        # the outputs too, for a term that reads them (a distillation); the task loss is the same either way
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        extra = compat.divided_for_accumulation(self, self.extra_loss(unwrap_model(model), inputs, outputs))
        if self._outer_chunk_weight is not None:  # a memory batch in chunks: the term counts once in all
            extra = extra * self._outer_chunk_weight
        loss = loss + extra
        return (loss, outputs) if return_outputs else loss

    # --- a method's step tracker ----------------------------------------------------------------------

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.step_tracker is not None and self._tracker_hook is None:
            # after the step, before zero_grad: the updated weights and the step's clipped gradients
            self._tracker_hook = optimizer.register_step_post_hook(
                lambda *_: None if self._in_outer_loop else self.step_tracker.update(self.model, self.state.global_step))
        return optimizer

    def _save_extra_state(self, checkpoint):
        super()._save_extra_state(checkpoint)
        if self.step_tracker is not None:
            torch.save(self.step_tracker.state_dict(), self._tracker_state_path(checkpoint))

    @property
    def extra_checkpoint_files(self):
        return super().extra_checkpoint_files + ((METHOD_STATE,) if self.step_tracker is not None else ())

    def _tracker_state_path(self, checkpoint):
        return os.path.join(checkpoint, METHOD_STATE.format(self.args.process_index))

    def _load_tracker_state(self):
        path = self._tracker_state_path(self._resumed_from)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: this checkpoint holds no state of the method's step tracker "
                                    f"for rank {self.args.process_index}, so the task cannot resume exactly")
        self.step_tracker.load_state_dict(on_parameter_devices(load_plain(path), dict(self.model.named_parameters())))


class _StepTrackerCallback(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer._resumed_from is not None:
            self.trainer._load_tracker_state()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = True
        return control
