"""RecurrentKIFTrainer: transformers.Trainer with the Recurrent-KIF loop, on the stock install.

The loop itself is rkif.loop.RecurrentKIFMixin; the patched transformers.Trainer of patches/
uses the same mixin.
"""

from transformers import trainer as _hf_trainer
from transformers.modeling_utils import unwrap_model

from . import compat
from .loop import RecurrentKIFMixin

# Under the patched install transformers.Trainer is already the keyword-API class built on this
# mixin; the subclass builds on the original Trainer either way.
_Trainer = getattr(_hf_trainer.Trainer, "rkif_original_trainer", _hf_trainer.Trainer)


class RecurrentKIFTrainer(RecurrentKIFMixin, _Trainer):
    """transformers.Trainer + Recurrent-KIF. Extra keywords: kif_config (KIFConfig), memory_dataset
    (tokenized features of the earlier tasks' memory; empty or None means plain training), extra_loss
    (extra_loss(model, inputs, outputs) -> a term added to each training micro-batch's loss: the methods'
    seam, rkif.methods.base)."""

    def __init__(self, *args, extra_loss=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_loss = extra_loss

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
