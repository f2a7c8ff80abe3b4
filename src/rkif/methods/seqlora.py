"""SeqLoRA: one LoRA adapter fine-tuned on each task in turn, nothing kept against forgetting (the lower
bound of the comparison). It is the base class as it is."""

from .base import Method


class SeqLoRA(Method):
    name = "SeqLoRA"
