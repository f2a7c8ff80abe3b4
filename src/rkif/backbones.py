"""The two backbones, each as a small description: how to load it, turn records into features, and
generate. The training skeleton (rkif.training) and the generation entry (rkif.generate) take one of
these; everything else is shared.

T5 (seq2seq): the instruction is inside ``input``; the label is ``output``; files {task}_T5.json.
LLaMA (causal LM): Alpaca prompt, loss on the response only (unless --train_on_inputs), EOS appended,
pad id 0 with left padding; files {task}.json with instruction, input, output.
"""

import importlib.util
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from . import compat
from .causal import (causal_predictor_factory, check_chat_template, check_long_prompts, check_template, load_tokenizer,
                     long_prompt_report, tokenize_causal)
from .errors import InputError
from .base_model import load_pretrained
from .seq2seq import seq2seq_predictor_factory, tokenize_seq2seq
from .settings import LlamaSettings, T5Settings


@dataclass(frozen=True)
class Backbone:
    name: str  # t5 | llama: the recipes' and the precision resolver's key
    title: str  # printed at the start of training
    settings: type  # its own settings group (rkif.settings)
    cutoff_flag: str  # the training cutoff of inputs, which generation compares test inputs with
    generation_flags: tuple  # its own settings that generation takes too (the cutoff first)
    length_flag: str  # the generation settings' cap on a prediction's length
    file_suffix: str  # {task}{file_suffix}.json
    train_fields: tuple  # what every training record must hold
    test_fields: tuple  # and every test record
    task_type: str  # peft TaskType
    training_defaults: dict = field(default_factory=dict)  # where its default differs from the declaration
    generation_defaults: dict = field(default_factory=dict)
    # settings: a command's rkif.settings.Settings (settings.run, settings.t5 or settings.llama, ...)
    check: object = None  # check(settings) -> settings: backbone flags, before anything is read
    load: object = None  # load(settings, fp16, bf16) -> (model, tokenizer), before LoRA
    finish: object = None  # finish(model, tokenizer) once LoRA is in place
    features: object = None  # features(tokenizer, settings) -> records -> features
    report: object = None  # report(plan, tokenizer, settings) -> entries for run_info.json
    predictor: object = None  # predictor(settings, cutoff) -> make_predictor(adapter_dir) -> predict(records)


# T5

def _check_t5(settings):
    if compat.is_gguf(settings.run.base_model):
        raise InputError(f"--base_model {settings.run.base_model}: GGUF files are read on the causal LM path "
                         "(finetune_KIF_llama.py and its generators); give T5 as a model folder")
    return settings


def _load_t5(settings, fp16, bf16):
    run = settings.run
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, run.base_model, cache_dir=run.cache_dir)
    # Weights loaded without initialisation, so the LoRA initialisation takes the first draws of the
    # torch RNG after set_seed, as with the released device_map="auto" loading.
    model = load_pretrained(AutoModelForSeq2SeqLM.from_pretrained, run.base_model,
                            cache_dir=run.cache_dir, **compat.model_load_kwargs(skip_init=True))
    return model, tokenizer


def _t5_features(tokenizer, settings):
    return lambda records: tokenize_seq2seq(records, tokenizer, settings.t5.max_input_length,
                                            settings.t5.max_target_length)


def _t5_predictor(settings, cutoff):
    run, generation = settings.run, settings.generation
    return seq2seq_predictor_factory(run.base_model, generation.gen_precision, run.cache_dir, cutoff,
                                     generation.max_length, generation.truncate_inputs,
                                     generation.generation_memory_gb)


T5 = Backbone(
    name="t5", title="T5-LoRA", settings=T5Settings, cutoff_flag="max_input_length", length_flag="max_length",
    generation_flags=("max_input_length",),
    file_suffix="_T5",
    train_fields=("input", "output"), test_fields=("id", "input", "output"), task_type="SEQ_2_SEQ_LM",
    check=_check_t5, load=_load_t5, finish=lambda model, tokenizer: None, features=_t5_features,
    report=lambda plan, tokenizer, settings: {}, predictor=_t5_predictor)


# LLaMA

def _check_llama(settings):
    llama = settings.llama
    check_template(llama.prompt_template_name)
    check_long_prompts(llama.long_prompts)
    if llama.load_8bit:
        check_8bit(settings.training.precision)
        # Int8 layers compute in fp16; the Trainer's scaler goes with it, as released
        return settings.replace(precision="fp16")
    return settings


def _load_llama(settings, fp16, bf16):
    run, llama = settings.run, settings.llama
    tokenizer = load_tokenizer(run.base_model, run.cache_dir)
    # Weights loaded without initialisation, so the LoRA initialisation takes the first draws of the
    # torch RNG after set_seed, as with the released device_map loading. A GGUF file is dequantised
    # to the training precision.
    kwargs = compat.model_load_kwargs(torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32,
                                      skip_init=True)
    if llama.load_8bit:
        kwargs = compat.load_8bit_kwargs(int(os.environ.get("LOCAL_RANK", 0)))
    source, gguf = compat.pretrained_source(run.base_model, model=True)
    model = compat.dense_model(load_pretrained(AutoModelForCausalLM.from_pretrained, source,
                                               cache_dir=run.cache_dir, **gguf, **kwargs))
    if llama.load_8bit:
        model = compat.prepare_8bit(model)
    return model, tokenizer


def _finish_llama(model, tokenizer):
    # LoRA weights train in fp32 even on a half-precision base: the fp16 gradient scaler cannot
    # unscale fp16 parameters, and fp32 keeps small outer-loop updates from rounding away.
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()
    model.config.pad_token_id = tokenizer.pad_token_id


def _llama_features(tokenizer, settings):
    llama = settings.llama
    check_chat_template(tokenizer, llama.prompt_template_name, settings.run.base_model)
    return lambda records: tokenize_causal(records, tokenizer, llama.cutoff_len, llama.train_on_inputs,
                                           llama.add_eos_token, llama.long_prompts, llama.prompt_template_name)


def _llama_predictor(settings, cutoff):
    run, generation = settings.run, settings.generation
    return causal_predictor_factory(run.base_model, generation.gen_precision, run.cache_dir, cutoff,
                                    generation.max_new_tokens, generation.truncate_inputs,
                                    settings.llama.prompt_template_name, generation.generation_memory_gb)


LLAMA = Backbone(
    name="llama", title="LLaMA-LoRA", settings=LlamaSettings, cutoff_flag="cutoff_len", length_flag="max_new_tokens",
    generation_flags=("cutoff_len", "prompt_template_name"),
    file_suffix="",
    train_fields=("instruction", "input", "output"), test_fields=("id", "instruction", "input", "output"),
    task_type="CAUSAL_LM",
    training_defaults={"train_batch_size_outer": 64, "lora_target_modules": ("q_proj", "v_proj"),
                       "precision": "auto", "gradient_checkpointing": True},  # as the 8-bit preparation had it
    check=_check_llama, load=_load_llama, finish=_finish_llama, features=_llama_features,
    report=lambda plan, tokenizer, settings: {"long_prompts": long_prompt_report(
        plan, tokenizer, settings.llama.cutoff_len, settings.llama.long_prompts, settings.llama.prompt_template_name)},
    predictor=_llama_predictor)

BACKBONES = {b.name: b for b in (T5, LLAMA)}
LENGTH_FLAGS = {b.length_flag for b in BACKBONES.values()}


def get_backbone(name):
    if name not in BACKBONES:
        raise InputError(f"--backbone must be one of {tuple(BACKBONES)}, got {name!r}")
    return BACKBONES[name]


def check_8bit(precision):
    """--load_8bit where it can work: bitsandbytes installed, a GPU, fp16 (what Int8 layers compute in), and
    what the stack's peft needs (rkif.compat.check_8bit_with_peft)."""
    if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
        raise InputError("--load_8bit needs the optional bitsandbytes package and a GPU; "
                         "without them leave it off (fp32 on CPU, bf16/fp16 on a GPU)")
    if precision not in ("auto", "fp16"):
        raise InputError(f"--load_8bit with --precision {precision}: 8-bit layers compute in fp16; use --precision "
                         "fp16 (or auto), or leave --load_8bit off")
    compat.check_8bit_with_peft()
