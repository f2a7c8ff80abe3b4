"""LLaMA (causal LM) features and generation: Alpaca prompt, loss on the response only, left padding."""

from .errors import InputError

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
RESPONSE_MARKER = "### Response:"
PROMPT_TEMPLATES = ("alpaca",)
PAD_ID = 0  # unk in LLaMA's vocabulary; the released recipe pads with it, on the left


def alpaca_prompt(instruction, input=None, output=None):
    """The Alpaca prompt, followed by the output when training."""
    template = PROMPT_WITH_INPUT if input else PROMPT_NO_INPUT
    text = template.format(instruction=instruction, input=input)
    return text + output if output is not None else text


def check_template(prompt_template_name):
    if prompt_template_name not in PROMPT_TEMPLATES:
        raise InputError(f"--prompt_template_name: unknown template {prompt_template_name!r}; "
                         f"available: {PROMPT_TEMPLATES}")


def tokenize_causal(records, tokenizer, cutoff_len=512, train_on_inputs=False, add_eos_token=True):
    """Features {input_ids, attention_mask, labels} for prompt + output.

    Truncated to cutoff_len; EOS appended when the text ends before the cutoff. Unless
    train_on_inputs, the prompt's tokens are labelled -100 so only the response is learned.
    """
    features = []
    for r in records:
        full = tokenizer(alpaca_prompt(r["instruction"], r["input"], r["output"]), truncation=True,
                         max_length=cutoff_len, padding=False)
        ids, mask = list(full["input_ids"]), list(full["attention_mask"])
        if add_eos_token and len(ids) < cutoff_len and ids[-1] != tokenizer.eos_token_id:
            ids.append(tokenizer.eos_token_id)
            mask.append(1)
        labels = list(ids)
        if not train_on_inputs:
            prompt_len = len(tokenizer(alpaca_prompt(r["instruction"], r["input"]), truncation=True,
                                       max_length=cutoff_len, padding=False)["input_ids"])
            labels = [-100] * prompt_len + labels[prompt_len:]
        features.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return features


def load_tokenizer(base_model, cache_dir=None):
    from transformers import LlamaTokenizer

    from .flags import load_pretrained

    tokenizer = load_pretrained(LlamaTokenizer.from_pretrained, base_model, cache_dir=cache_dir)
    tokenizer.pad_token_id = PAD_ID
    tokenizer.padding_side = "left"
    return tokenizer


def generation_dtype(precision, device):
    import torch

    choices = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in choices:
        raise InputError(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    return choices[precision]


def load_causal_for_generation(base_model, adapter_dir, precision="auto", cache_dir=None):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .flags import load_pretrained

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = generation_dtype(precision, device)
    tokenizer = load_tokenizer(base_model, cache_dir)
    model = load_pretrained(AutoModelForCausalLM.from_pretrained, base_model, cache_dir=cache_dir, torch_dtype=dtype)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.config.pad_token_id = PAD_ID
    # A prompt over the cutoff loses its beginning, not the "### Response:" the answer follows.
    tokenizer.truncation_side = "left"
    return model.to(device).eval(), tokenizer, device


def greedy_causal(model, tokenizer, device, prompts, cutoff_len=512, max_new_tokens=128):
    """Greedy answers: the generated text after the prompt's "### Response:", stripped."""
    import torch

    enc = tokenizer(prompts, truncation=True, max_length=cutoff_len, padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
                             pad_token_id=PAD_ID, eos_token_id=tokenizer.eos_token_id)
    # With left padding every prompt ends at the same column, so the answer is what follows it:
    # the same text the released recipe took with output.split("### Response:")[1].
    return [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def causal_predictor_factory(base_model, precision="auto", cache_dir=None, cutoff_len=512, max_new_tokens=128):
    def make_predictor(adapter_dir):
        model, tokenizer, device = load_causal_for_generation(base_model, adapter_dir, precision, cache_dir)

        def predict(records):
            prompts = [alpaca_prompt(r["instruction"], r["input"]) for r in records]
            return greedy_causal(model, tokenizer, device, prompts, cutoff_len, max_new_tokens)

        return predict

    return make_predictor
