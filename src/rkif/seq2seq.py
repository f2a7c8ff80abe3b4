"""T5 (seq2seq) features: the instruction is already inside ``input``; the label is ``output``."""


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
