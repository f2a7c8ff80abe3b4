"""The released keyword API of the patched transformers.Trainer, on the package's loop.

Users of the classic workflow (patches/) call
    transformers.Trainer(..., train_dataset_memory=..., ipt_score=..., outer_lr=...,
                         empty_inner_score_flag=..., empty_outer_score_flag=..., outer_iterations=...)
with transformers.TrainingArguments(..., inner_iterations=..., train_batch_size_outer=...).
KeywordAPIMixin turns those keywords into a KIFConfig and a memory dataset; the loop is
rkif.loop.RecurrentKIFMixin, exactly as in rkif.kif_trainer.RecurrentKIFTrainer.
"""

import os

from .loop import RecurrentKIFMixin
from .settings import KIFConfig

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def memory_features(train_dataset_memory):
    """Tokenized memory examples as plain feature dicts (a datasets.Dataset may carry text columns too)."""
    if train_dataset_memory is None:
        return None
    return [{k: row[k] for k in MODEL_INPUTS if k in row} for row in train_dataset_memory]


def importance_settings(ipt_score, quantile=KIFConfig.quantile):
    """(beta1, beta2, quantile) from what the released scripts pass as ``ipt_score``.

    That is their own importance object (utils.lora_importance_bilevel.RankAllocator), which
    carries ``beta1``, ``beta2`` and ``quantile``; any object with those attributes will do (an
    rkif ImportanceTracker has the betas). ``quantile`` is used where the object has none.
    """
    if ipt_score is None:
        return KIFConfig.beta1, KIFConfig.beta2, quantile
    missing = [a for a in ("beta1", "beta2") if not hasattr(ipt_score, a)]
    if missing:
        raise TypeError(f"ipt_score ({type(ipt_score).__name__}) has no {' and no '.join(missing)}: pass the "
                        "released RankAllocator, or any object with the EMA coefficients beta1 and beta2 "
                        "(and optionally quantile)")
    return float(ipt_score.beta1), float(ipt_score.beta2), float(getattr(ipt_score, "quantile", quantile))


class KeywordAPIMixin(RecurrentKIFMixin):
    def __init__(self, *args, train_dataset_memory=None, ipt_score=None, outer_lr=KIFConfig.outer_lr,
                 empty_inner_score_flag=KIFConfig.empty_inner_score_flag,
                 empty_outer_score_flag=KIFConfig.empty_outer_score_flag, outer_iterations=KIFConfig.outer_iterations,
                 quantile=KIFConfig.quantile, outer_optimizer=KIFConfig.outer_optimizer, **kwargs):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        beta1, beta2, quantile = importance_settings(ipt_score, quantile)
        config = KIFConfig(
            inner_iterations=getattr(training_args, "inner_iterations", KIFConfig.inner_iterations),
            outer_iterations=outer_iterations,
            train_batch_size_outer=getattr(training_args, "train_batch_size_outer", KIFConfig.train_batch_size_outer),
            quantile=quantile, beta1=beta1, beta2=beta2,
            empty_inner_score_flag=bool(empty_inner_score_flag), empty_outer_score_flag=bool(empty_outer_score_flag),
            outer_optimizer=outer_optimizer, outer_lr=outer_lr)
        memory = memory_features(train_dataset_memory)
        if memory and ipt_score is not None and int(os.environ.get("LOCAL_RANK", 0)) == 0:
            # The loop keeps its own inner and outer trackers; from the caller's object it takes these.
            print(f"Recurrent-KIF: importance from ipt_score ({type(ipt_score).__name__}): beta1={beta1}, "
                  f"beta2={beta2}, quantile={quantile}")
        super().__init__(*args, kif_config=config, memory_dataset=memory, **kwargs)
