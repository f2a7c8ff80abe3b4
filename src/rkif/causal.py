"""LLaMA (causal LM) features and generation: Alpaca prompt, loss on the response only, left padding."""

import os
import sys

import torch
from transformers import AutoModelForCausalLM

from .compat import causal_pad_id, causal_tokenizer_class, dense_model, model_load_kwargs, pretrained_source
from .errors import InputError
from .generation_memory import add_memory_budget
from .base_model import load_pretrained
from .generation_precision import assemble, generation_numerics
from .settings import GenerationSettings, LlamaSettings

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
PROMPT_TEMPLATES = ("alpaca", "chatml")  # --prompt_template_name
RESPONSE_SPLIT = "### Response:"
PROMPT_RULES = ("released", "shorten_input")  # --long_prompts
PAD_ID = 0  # unk in LLaMA's vocabulary; the released recipe pads with it, on the left


def alpaca_prompt(instruction, input=None, output=None):
    """The Alpaca prompt, followed by the output when training."""
    template = PROMPT_WITH_INPUT if input else PROMPT_NO_INPUT
    text = template.format(instruction=instruction, input=input)
    return text + output if output is not None else text


def prompt_text(record, tokenizer=None, template="alpaca", with_output=False):
    """The prompt of a record {instruction, input, output}, followed by its output when training.

    alpaca (released): the Alpaca template. chatml: the tokenizer's own chat template, one user turn
    (instruction, then the input after a blank line) and the start of the assistant's turn; the model's
    EOS (for ChatML models <|im_end|>) then ends the output, as it ends every turn."""
    output = record["output"] if with_output else None
    if template == "alpaca":
        return alpaca_prompt(record["instruction"], record["input"], output)
    content = f"{record['instruction']}\n\n{record['input']}" if record["input"] else record["instruction"]
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    return text + output if output is not None else text


def special_tokens_in_text(template):
    """chatml text already holds the template's special tokens (BOS included where the template writes it),
    so the tokenizer adds none; alpaca text is tokenized as released (LLaMA's tokenizer adds BOS)."""
    return template == "alpaca"


def check_chat_template(tokenizer, template, base_model):
    if template == "chatml" and not getattr(tokenizer, "chat_template", None):
        raise InputError(f"--prompt_template_name chatml: the tokenizer of {base_model} has no chat template; use "
                         "alpaca")


def check_long_prompts(long_prompts):
    if long_prompts not in PROMPT_RULES:
        raise InputError(f"--long_prompts must be one of {PROMPT_RULES}, got {long_prompts!r}")


def check_template(prompt_template_name):
    if prompt_template_name not in PROMPT_TEMPLATES:
        raise InputError(f"--prompt_template_name: unknown template {prompt_template_name!r}; "
                         f"available: {PROMPT_TEMPLATES}")


ELLIPSIS = " ... "  # marks the middle of an input that --long_prompts shorten_input cut out


def _tokenize(tokenizer, text, cutoff_len, add_eos, template="alpaca"):
    """The released tokenize(): truncate at cutoff_len, append EOS only while there is room."""
    result = tokenizer(text, truncation=True, max_length=cutoff_len, padding=False,
                       add_special_tokens=special_tokens_in_text(template))
    ids, mask = list(result["input_ids"]), list(result["attention_mask"])
    if add_eos and ids[-1] != tokenizer.eos_token_id and len(ids) < cutoff_len:
        ids.append(tokenizer.eos_token_id)
        mask.append(1)
    return ids, mask


def released_features(record, tokenizer, cutoff_len=512, train_on_inputs=LlamaSettings.train_on_inputs,
                      add_eos_token=LlamaSettings.add_eos_token, template="alpaca"):
    """One example as the released generate_and_tokenize_prompt builds it.

    The full text (prompt + output) always gets EOS when it fits, whatever add_eos_token says;
    add_eos_token only changes how many prompt tokens are masked: the prompt is tokenized with
    EOS (when it fits) and one token is taken off its length. So a prompt that alone reaches the
    cutoff masks cutoff - 1 tokens and the last token of the example keeps its label.
    """
    ids, mask = _tokenize(tokenizer, prompt_text(record, tokenizer, template, with_output=True), cutoff_len,
                          add_eos=True, template=template)
    labels = list(ids)
    if not train_on_inputs:
        prompt_ids, _ = _tokenize(tokenizer, prompt_text(record, tokenizer, template), cutoff_len,
                                  add_eos=add_eos_token, template=template)
        prompt_len = len(prompt_ids) - (1 if add_eos_token else 0)
        if ids[:prompt_len] != prompt_ids[:prompt_len]:
            return _features_across_a_merge(record, tokenizer, prompt_ids[:prompt_len], cutoff_len)
        labels = [-100] * prompt_len + labels[prompt_len:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _features_across_a_merge(record, tokenizer, prompt_ids, cutoff_len):
    """An example whose prompt's tokens are not a prefix of prompt + output's: a BPE merge across the
    boundary (an output that starts with whitespace or punctuation, say). Masking len(prompt) tokens of
    the joint tokenization would hide the output's first token or label the prompt's last, so the
    example is the prompt's own tokens (what generation is given) followed by the output's tokens alone
    and EOS, cut at the cutoff; the labels are exactly the output and EOS. (LLaMA's sentencepiece
    tokenizer never merges across the Alpaca prompt's final newline: the released data never comes here.)"""
    output_ids = tokenizer(record["output"], add_special_tokens=False)["input_ids"]
    ids = (list(prompt_ids) + list(output_ids) + [tokenizer.eos_token_id])[:cutoff_len]
    labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels[:len(ids)]}


def _full_length(tokenizer, record, input_text, template="alpaca"):
    """Tokens of prompt + output + EOS, untruncated."""
    text = prompt_text({**record, "input": input_text}, tokenizer, template, with_output=True)
    return len(tokenizer(text, add_special_tokens=special_tokens_in_text(template))["input_ids"]) + 1


def _prompt_length(tokenizer, record, template="alpaca"):
    text = prompt_text(record, tokenizer, template)
    return len(tokenizer(text, add_special_tokens=special_tokens_in_text(template))["input_ids"])


def shortened_input(record, tokenizer, cutoff_len, template="alpaca"):
    """The input text with its middle cut out (beginning and end kept: the question and the
    "Answer:" cue sit at either end in this benchmark) so that prompt + output + EOS fit in
    cutoff_len; the input unchanged when it fits already; "" when nothing of it can stay."""
    text = record["input"]
    if _full_length(tokenizer, record, text, template) <= cutoff_len:
        return text

    def cut(keep):
        head = (keep + 1) // 2
        return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]

    lo, hi = 0, len(text) - 1  # characters kept; binary search for the most that fit
    if _full_length(tokenizer, record, cut(0), template) > cutoff_len:
        return ""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _full_length(tokenizer, record, cut(mid), template) <= cutoff_len:
            lo = mid
        else:
            hi = mid - 1
    return cut(lo)


def tokenize_causal(records, tokenizer, cutoff_len=512, train_on_inputs=LlamaSettings.train_on_inputs,
                    add_eos_token=LlamaSettings.add_eos_token, long_prompts=LlamaSettings.long_prompts,
                    template="alpaca"):
    """Features {input_ids, attention_mask, labels} for prompt + output.

    long_prompts "released" (default): the released rule (released_features), bitwise. A prompt
    that fills the cutoff there keeps one labelled token (its last one) and an example that
    overruns the cutoff loses the end of its response. "shorten_input": an example that would
    overrun first loses the middle of its input text (shortened_input), so the whole response and
    EOS are learned; only when even an empty input leaves too little room is the response cut.
    """
    check_long_prompts(long_prompts)
    features = []
    for r in records:
        if long_prompts == "shorten_input":
            r = {**r, "input": shortened_input(r, tokenizer, cutoff_len, template)}
        features.append(released_features(r, tokenizer, cutoff_len, train_on_inputs, add_eos_token, template))
    return features


def long_prompt_counts(records, tokenizer, cutoff_len=512, template="alpaca"):
    """What the cutoff does to these examples under each rule (for run_info.json and the console).

    released: response_cut = examples whose response or EOS is cut at the cutoff; no_response =
    those whose prompt alone reaches it (learned through the one token the released rule keeps).
    shorten_input: input_cut = examples whose input loses its middle; response_cut = those that
    still lose response tokens (even an empty input leaves too little room).
    """
    counts = {"examples": len(records), "cutoff_len": cutoff_len,
              "released": {"response_cut": 0, "no_response": 0},
              "shorten_input": {"input_cut": 0, "response_cut": 0}}
    for r in records:
        if _full_length(tokenizer, r, r["input"], template) <= cutoff_len:
            continue
        counts["released"]["response_cut"] += 1
        counts["released"]["no_response"] += _prompt_length(tokenizer, r, template) >= cutoff_len
        counts["shorten_input"]["input_cut"] += 1
        shorter = shortened_input(r, tokenizer, cutoff_len, template)
        counts["shorten_input"]["response_cut"] += _full_length(tokenizer, r, shorter, template) > cutoff_len
    return counts


def long_prompt_report(plan, tokenizer, cutoff_len, rule, template="alpaca"):
    """long_prompt_counts of the task's training set, memory and validation set, printed and returned
    (run_info.json keeps them), so that a user sees what the cutoff costs under either rule."""
    report = {"rule": rule}
    show = print if int(os.environ.get("LOCAL_RANK", 0)) == 0 else (lambda *a, **k: None)
    show(f"  long prompts (cutoff {cutoff_len}, rule in use: {rule}):")
    for part in ("train", "memory", "validation"):
        records = getattr(plan, part)
        if not records:
            continue
        c = report[part] = long_prompt_counts(records, tokenizer, cutoff_len, template)
        show(f"    {part}, {c['examples']} examples: released: {c['released']['response_cut']} lose response "
              f"tokens, {c['released']['no_response']} of them all but one; shorten_input: "
              f"{c['shorten_input']['input_cut']} inputs shortened, {c['shorten_input']['response_cut']} "
              "responses still cut")
    return report


def load_tokenizer(base_model, cache_dir=None):
    """The causal LM's tokenizer, padding on the left with pad_id(tokenizer). LlamaTokenizer (sentencepiece,
    pad 0 as released) on the pinned stack; the model's own (AutoTokenizer, or a GGUF file's) on the current."""
    source, gguf = pretrained_source(base_model)
    tokenizer = load_pretrained(causal_tokenizer_class().from_pretrained, source, cache_dir=cache_dir, **gguf)
    tokenizer.pad_token_id = pad_id(tokenizer)
    tokenizer.padding_side = "left"
    return tokenizer


def pad_id(tokenizer):
    """The id that pads batches (rkif.compat.causal_pad_id): PAD_ID for LLaMA-2 on the pinned stack, as
    released; on the current stack the model's own."""
    return causal_pad_id(tokenizer, PAD_ID)


def load_causal_for_generation(base_model, adapter_dir, precision="auto", cache_dir=None):
    """(model, tokenizer, device): base + adapter as rkif.generation_precision says for this precision and device."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    numerics = generation_numerics(precision, device, "llama")
    tokenizer = load_tokenizer(base_model, cache_dir)
    source, gguf = pretrained_source(base_model, model=True)
    model = dense_model(load_pretrained(AutoModelForCausalLM.from_pretrained, source, cache_dir=cache_dir, **gguf,
                                        **model_load_kwargs(getattr(torch, numerics.dtype), skip_init=True)))
    model = assemble(model, adapter_dir, numerics)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer, device


def cut_prompt_ids(ids, limit, bos_id=None):
    """A prompt's ids cut to ``limit`` tokens from the beginning: its BOS (when the first id is bos_id) and
    the last tokens stay, so the "### Response:" that the answer follows is kept (what a tokenizer with
    truncation_side="left" does). Tokenizers that add no BOS keep the last ``limit`` tokens."""
    if limit is None or len(ids) <= limit:
        return ids
    keep = 1 if ids and bos_id is not None and ids[0] == bos_id else 0
    return ids[:keep] + ids[len(ids) - limit + keep:]


def greedy_causal(model, tokenizer, device, prompts, max_new_tokens=GenerationSettings.max_new_tokens,
                  max_prompt_tokens=None, names=None, template="alpaca"):
    """Greedy answers: the generated text after the prompt's "### Response:", stripped (alpaca, as released);
    chatml: the generated tokens up to EOS, decoded without special tokens, stripped.

    Prompts are fed whole, as the released generator feeds them, except: max_prompt_tokens cuts each
    prompt to that many tokens (its beginning goes); a prompt longer than the model's context window
    (max_position_embeddings) is cut to window - max_new_tokens tokens, so that it and its answer
    fit, with a warning naming it (names[i], else its position). A prompt within the window is left
    whole even if its answer will run past it, as released.
    """
    window = getattr(model.config, "max_position_embeddings", None)
    bos = tokenizer.bos_token_id
    ids = [cut_prompt_ids(x, max_prompt_tokens, bos) for x in
           tokenizer(prompts, padding=False, add_special_tokens=special_tokens_in_text(template))["input_ids"]]
    if window:
        for k, x in enumerate(ids):
            if len(x) > window:
                name = names[k] if names else f"prompt {k}"
                print(f"warning: {name}: the prompt has {len(x)} tokens, more than the model's context window "
                      f"({window}); its beginning is cut to {max(window - max_new_tokens, 1)} tokens, keeping the end "
                      "(instruction and input lose their start; \"### Response:\" stays)", file=sys.stderr)
                ids[k] = cut_prompt_ids(x, max(window - max_new_tokens, 1), bos)
    enc = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    width = enc["input_ids"].shape[1]
    answers = []
    for prompt, row in zip(ids, out.tolist()):
        new = row[width:]
        if tokenizer.eos_token_id in new:  # what follows the first EOS is padding of a finished row
            new = new[:new.index(tokenizer.eos_token_id) + 1]
        if template == "alpaca":
            answers.append(released_answer(tokenizer.decode(prompt + new), tokenizer.eos_token))
        else:
            answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers


def released_answer(text, eos_token="</s>"):
    """The answer as the released generator and scorer take it from the decoded sequence (special
    tokens included): the text after "### Response:", stripped, with the model's EOS (LLaMA: </s>) removed."""
    parts = text.split(RESPONSE_SPLIT)
    return parts[1].strip().replace(eos_token, "") if len(parts) > 1 else ""


def causal_predictor_factory(base_model, precision="auto", cache_dir=None, cutoff_len=512,
                             max_new_tokens=GenerationSettings.max_new_tokens,
                             truncate_inputs=GenerationSettings.truncate_inputs, template="alpaca", memory_gb=0.0):
    """make_predictor(adapter_dir) -> predict(records); prompts fed whole unless truncate_inputs (then
    cut to cutoff_len from the beginning). predict.lengths / predict.training_cutoff: prompt lengths
    in tokens and cutoff_len, for the count of test prompts longer than what training saw. predict.fits: the
    memory budget of a batch (rkif.generation_memory), absent on CPU unless memory_gb is given."""
    def make_predictor(adapter_dir):
        model, tokenizer, device = load_causal_for_generation(base_model, adapter_dir, precision, cache_dir)
        check_chat_template(tokenizer, template, base_model)

        def predict(records):
            prompts = [prompt_text(r, tokenizer, template) for r in records]
            return greedy_causal(model, tokenizer, device, prompts, max_new_tokens,
                                 cutoff_len if truncate_inputs else None, [r["id"] for r in records], template)

        predict.lengths = lambda records: [_prompt_length(tokenizer, r, template) for r in records]
        predict.training_cutoff = cutoff_len
        add_memory_budget(predict, model, device, max_new_tokens, memory_gb)
        return predict

    return make_predictor
