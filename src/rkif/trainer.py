"""RecurrentKIFTrainer: transformers.Trainer with the Recurrent-KIF loop, on the stock install.

The loop itself is rkif.loop.RecurrentKIFMixin; the patched transformers.Trainer of patches/
uses the same mixin.
"""

from transformers import trainer as _hf_trainer

from .loop import KIF_STATE, OUTER_OPTIMIZERS, FeatureList, KIFConfig, RecurrentKIFMixin  # noqa: F401

# Under the patched install transformers.Trainer is already the keyword-API class built on this
# mixin; the subclass builds on the original Trainer either way.
_Trainer = getattr(_hf_trainer.Trainer, "rkif_original_trainer", _hf_trainer.Trainer)


class RecurrentKIFTrainer(RecurrentKIFMixin, _Trainer):
    """transformers.Trainer + Recurrent-KIF. Extra keywords: kif_config (KIFConfig), memory_dataset
    (tokenized features of the earlier tasks' memory; empty or None means plain training)."""
