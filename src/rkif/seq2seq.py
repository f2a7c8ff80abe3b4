"""T5 (seq2seq) features: the instruction is already inside ``input``; the label is ``output``."""

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from .compat import model_load_kwargs
from .generation_memory import add_memory_budget
from .base_model import load_pretrained
from .generation_precision import assemble, generation_numerics
from .settings import GenerationSettings


def tokenize_seq2seq(records, tokenizer, max_input_length, max_target_length):
    """List of {input_ids, attention_mask, labels}; unpadded (the collator pads, labels with -100)."""
    if not records:
        return []
    inputs = tokenizer([r["input"] for r in records], max_length=max_input_length, truncation=True)
    labels = tokenizer(text_target=[r["output"] for r in records], max_length=max_target_length, truncation=True)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": lab}
        for ids, mask, lab in zip(inputs["input_ids"], inputs["attention_mask"], labels["input_ids"])
    ]


def load_seq2seq_for_generation(base_model, adapter_dir, precision="auto", cache_dir=None):
    """(model, tokenizer, device): base + adapter as rkif.generation_precision says for this precision and device."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    numerics = generation_numerics(precision, device, "t5")
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, base_model, cache_dir=cache_dir)
    model = load_pretrained(AutoModelForSeq2SeqLM.from_pretrained, base_model, cache_dir=cache_dir,
                            **model_load_kwargs(getattr(torch, numerics.dtype), skip_init=True))
    return assemble(model, adapter_dir, numerics).to(device).eval(), tokenizer, device


def greedy_seq2seq(model, tokenizer, device, texts, max_input_length=None, max_length=GenerationSettings.max_length):
    """Greedy predictions for a batch of inputs, decoded as the released generator does: special
    tokens kept, then </s> and <pad> removed and the text stripped.
    max_input_length: cut each input to that many tokens; None (default): the whole input, as the
    released T5 generators feed it."""
    cut = {"max_length": max_input_length, "truncation": True} if max_input_length else {}
    enc = tokenizer(texts, padding=True, return_tensors="pt", **cut).to(device)
    with torch.inference_mode():
        out = model.generate(**enc, max_length=max_length, num_beams=1, do_sample=False)
    return [t.replace("</s>", "").replace("<pad>", "").strip() for t in tokenizer.batch_decode(out)]


def seq2seq_predictor_factory(base_model, precision="auto", cache_dir=None, max_input_length=1024,
                              max_length=GenerationSettings.max_length,
                              truncate_inputs=GenerationSettings.truncate_inputs, memory_gb=0.0):
    """make_predictor(adapter_dir) -> predict(records) for rkif.prediction_folders.run_generation.

    Inputs are fed whole unless truncate_inputs (then cut at max_input_length). predict.lengths
    gives the records' input lengths in tokens and predict.training_cutoff the training cut
    (max_input_length), for the count of test inputs longer than what training saw. predict.fits: the
    memory budget of a batch (rkif.generation_memory), absent on CPU unless memory_gb is given.
    """

    def make_predictor(adapter_dir):
        model, tokenizer, device = load_seq2seq_for_generation(base_model, adapter_dir, precision, cache_dir)

        def predict(records):
            return greedy_seq2seq(model, tokenizer, device, [r["input"] for r in records],
                                  max_input_length if truncate_inputs else None, max_length)

        predict.lengths = lambda records: [len(ids) for ids in tokenizer([r["input"] for r in records])["input_ids"]]
        predict.training_cutoff = max_input_length

        add_memory_budget(predict, model, device, max_length, memory_gb)
        return predict

    return make_predictor
