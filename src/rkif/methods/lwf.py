"""LwF (Learning without Forgetting, Li and Hoiem, TPAMI 2017) on one LoRA adapter.

Each task starts from the previous task's adapter, as SeqLoRA does, and adds to the task loss a
distillation term towards the previous adapter's output distribution on the new task's inputs:

    lwf_lambda * T^2 * mean over label tokens of KL(softmax(teacher / T) || softmax(student / T))

with T = --lwf_temperature. The defaults are the paper's: T = 2 (which it takes from Hinton et al.
2015) and its loss balance weight lambda_o = 1, the value of most of its experiments. The T^2 factor keeps the term's gradients at the scale of the task loss's as T
changes (Hinton et al. 2015, section 2).

Memory: the teacher's logits and the fp32 distributions of both over the vocabulary, about four times
the logits in fp32 at the peak (LLaMA-2's 32000 tokens x micro-batch x length); a smaller
--micro_batch_size (the same --batch_size) lowers it.

The teacher is the previous adapter itself, not a second model: its LoRA weights (a few MB) are kept
on the parameters' device and put in place of the student's for a no-grad forward in eval mode (no
dropout, no draw of the random generator), through torch.func.functional_call, which swaps the
tensors in and back without writing to the student's, so the student's forward and backward are
untouched. The label tokens are where the labels are not -100: for a seq2seq model the decoder positions
themselves, for a causal LM the positions before them (the logits predict the next token).
"""

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..adapters import lora_parameters
from ..settings import LwFSettings
from .base import Method


def label_token_mask(labels, encoder_decoder):
    """(batch, positions) True where the logits predict a label token."""
    if encoder_decoder:
        return labels != -100
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


def distillation_loss(student_logits, teacher_logits, mask, temperature):
    """T^2 x the mean over the masked positions of KL(softmax(teacher / T) || softmax(student / T)), in fp32
    (0 without a masked position). Every position is computed and the mask weighs them: selecting the label
    positions first would wait for the GPU at every step (a data-dependent shape)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    weights = mask.to(kl.dtype)
    return temperature ** 2 * (kl * weights).sum() / weights.sum().clamp(min=1)


class SwappedTeacher:
    """The previous adapter's LoRA weights, put in place of the student's for one no-grad forward."""

    def __init__(self, model):
        self.weights = {n: p.detach().clone() for n, p in lora_parameters(model).items()}

    @torch.no_grad()
    def logits(self, model, inputs):
        for n, p in lora_parameters(model).items():  # each to its parameter's device, once
            if self.weights[n].device != p.device or self.weights[n].dtype != p.dtype:
                self.weights[n] = self.weights[n].to(device=p.device, dtype=p.dtype)
        was_training = model.training
        model.eval()
        try:
            return functional_call(model, self.weights, args=(), kwargs=dict(inputs)).logits
        finally:
            model.train(was_training)


class LwF(Method):
    name = "LwF"
    settings = (LwFSettings,)

    def build(self, base, plan, lora, settings):
        model, _ = super().build(base, plan, lora, settings)
        if not plan.previous_adapter:  # the first task has no teacher
            return model, None
        teacher, lwf = SwappedTeacher(model), settings.lwf
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))

        def extra_loss(model, inputs, outputs):
            teacher_logits = teacher.logits(model, inputs)
            mask = label_token_mask(inputs["labels"], encoder_decoder)
            return lwf.lwf_lambda * distillation_loss(outputs.logits, teacher_logits, mask, lwf.lwf_temperature)

        return model, extra_loss
