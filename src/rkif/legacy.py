"""The released keyword API of the patched transformers.Trainer, on the package's loop.

Users of the classic workflow (patches/) call
    transformers.Trainer(..., train_dataset_memory=..., ipt_score=..., outer_lr=...,
                         empty_inner_score_flag=..., empty_outer_score_flag=..., outer_iterations=...)
with transformers.TrainingArguments(..., inner_iterations=..., train_batch_size_outer=...).
KeywordAPIMixin turns those keywords into a KIFConfig and a memory dataset; the loop is
rkif.loop.RecurrentKIFMixin, exactly as in rkif.trainer.RecurrentKIFTrainer.
"""

from .importance import ImportanceTracker
from .loop import KIFConfig, RecurrentKIFMixin

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def memory_features(train_dataset_memory):
    """Tokenized memory examples as plain feature dicts (a datasets.Dataset may carry text columns too)."""
    if train_dataset_memory is None:
        return None
    return [{k: row[k] for k in MODEL_INPUTS if k in row} for row in train_dataset_memory]


class KeywordAPIMixin(RecurrentKIFMixin):
    def __init__(self, *args, train_dataset_memory=None, ipt_score=None, outer_lr=1e-3, empty_inner_score_flag=1,
                 empty_outer_score_flag=0, outer_iterations=4, quantile=0.8, outer_optimizer="shared", **kwargs):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if ipt_score is not None and not isinstance(ipt_score, ImportanceTracker):
            raise TypeError(f"ipt_score must be an rkif.importance.ImportanceTracker, got {type(ipt_score).__name__}")
        tracker = ipt_score or ImportanceTracker()
        config = KIFConfig(
            inner_iterations=getattr(training_args, "inner_iterations", 8),
            outer_iterations=outer_iterations,
            train_batch_size_outer=getattr(training_args, "train_batch_size_outer", 8),
            quantile=quantile, beta1=tracker.beta1, beta2=tracker.beta2,
            empty_inner_score_flag=bool(empty_inner_score_flag), empty_outer_score_flag=bool(empty_outer_score_flag),
            outer_optimizer=outer_optimizer, outer_lr=outer_lr)
        super().__init__(*args, kif_config=config, memory_dataset=memory_features(train_dataset_memory), **kwargs)
        self.inner_tracker = tracker  # the caller's object is the inner tracker, as in the released code
