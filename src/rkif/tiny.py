"""Build a small T5 and its sentencepiece tokenizer from scratch (seeded, no downloads).

    python -m rkif.tiny OUT_DIR [--data_dir DIR] [--arch t5|llama] [--vocab_size 384] [--d_model 64] ...

The folder loads with the same from_pretrained calls as t5-large (or LLaMA-2), so tests and the
demo exercise the real code path. For T5, tokenizer.json is written too, so loading needs no
conversion.
"""

import glob
import io
import json
import os

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from .causal import alpaca_prompt
from .cli_runner import run
from .compat import TINY_CAUSAL_TOKENIZER, t5_tokenizer_from_sentencepiece
from .errors import InputError

DEFAULT_CORPUS = [
    "What is the topic of the following paragraph? Choose one from the option.",
    "Option: yes, no. Answer: positive negative neutral entailment contradiction",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9",
]


def corpus_from_data_dir(data_dir):
    """Every input and output string of the *_T5.json files under data_dir."""
    texts = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*", "*_T5.json"))):
        with open(path, encoding="utf-8") as f:
            for r in json.load(f):
                texts += [r["input"], r["output"]]
    return texts


T5_SPECIAL_IDS = dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
LLAMA_SPECIAL_IDS = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)


def llama_corpus(data_dir):
    """The Alpaca prompts and outputs of the {task}.json files under data_dir."""
    texts = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*", "*.json"))):
        if path.endswith("_T5.json"):
            continue
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
        if isinstance(records, list):
            texts += [alpaca_prompt(r["instruction"], r["input"], r["output"]) for r in records if "instruction" in r]
    return texts


def train_sentencepiece(texts, vocab_size, special_ids=T5_SPECIAL_IDS, **options):
    """Serialized unigram model; special_ids as in T5 (pad 0, eos 1, unk 2) or LLaMA (unk 0, bos 1, eos 2)."""
    import sentencepiece as spm

    # Every character gets a piece when they fit in the vocabulary (small synthetic corpora); real text
    # (over a thousand distinct characters) keeps the most frequent ones, as sentencepiece does by default.
    coverage = 1.0 if len(set("".join(texts))) + 16 < vocab_size else 0.9995
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        character_coverage=coverage, hard_vocab_limit=False, num_threads=1, minloglevel=2, **special_ids, **options,
    )
    return buf.getvalue()


def _save_random_model(model_class, config, out_dir, seed, device, dtype):
    """Random weights, initialised on ``device`` (a GPU makes billion-parameter shapes quick), saved in dtype."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_class(config)
    model.to(dtype or torch.float32).save_pretrained(out_dir)


def build_tiny_t5(out_dir, texts=None, vocab_size=384, d_model=64, d_ff=128, num_layers=2, num_heads=4,
                  dropout_rate=0.0, seed=0, model_vocab_size=None, d_kv=None, feed_forward_proj="relu", device="cpu",
                  dtype=None):
    """Writes config, weights, spiece.model and tokenizer.json to out_dir; returns out_dir.

    model_vocab_size (>= the tokenizer's), d_kv and feed_forward_proj give real shapes (T5-large:
    32128, 64, "gated-gelu" for v1.1 / "relu" for v1) with a small tokenizer trained on the spot."""
    os.makedirs(out_dir, exist_ok=True)
    spm_path = os.path.join(out_dir, "spiece.model")
    with open(spm_path, "wb") as f:
        f.write(train_sentencepiece(list(texts or DEFAULT_CORPUS), vocab_size))
    tokenizer = t5_tokenizer_from_sentencepiece(spm_path, model_max_length=1024)
    tokenizer.save_pretrained(out_dir)
    config = T5Config(
        vocab_size=max(len(tokenizer), model_vocab_size or 0), d_model=d_model, d_ff=d_ff,
        d_kv=d_kv or d_model // num_heads, num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads,
        dropout_rate=dropout_rate, feed_forward_proj=feed_forward_proj, decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    _save_random_model(T5ForConditionalGeneration, config, out_dir, seed, device, dtype)
    return out_dir


def build_tiny_llama(out_dir, texts=None, vocab_size=384, hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=4, seed=0, model_vocab_size=None, device="cpu", dtype=None):
    """A small LlamaForCausalLM and its tokenizer, as each stack's models come (rkif.compat.TINY_CAUSAL_TOKENIZER):
    pinned: LLaMA-2's kind, a sentencepiece LlamaTokenizer (unk 0, bos 1, eos 2; newlines kept as a token);
    current: SmolLM2's kind, grouped-query attention, rope_theta, tied embeddings and a byte-level BPE
    tokenizer with ChatML tokens (EOS <|im_end|>, no BOS added, no pad token) and a chat template.
    model_vocab_size (>= the tokenizer's) gives the real embedding shape (LLaMA-2: 32000)."""
    os.makedirs(out_dir, exist_ok=True)
    texts = list(texts or DEFAULT_CORPUS)
    if TINY_CAUSAL_TOKENIZER == "bpe":
        tokenizer = byte_level_bpe_tokenizer(texts, vocab_size)
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        shape = {"num_key_value_heads": max(1, num_heads // 2), "rope_theta": 100000.0, "tie_word_embeddings": True}
    else:
        spm_path = os.path.join(out_dir, "tokenizer.model")
        with open(spm_path, "wb") as f:
            # identity normalisation and "\n" as a symbol keep the Alpaca prompt's line breaks, as LLaMA's
            # byte-fallback vocabulary does
            f.write(train_sentencepiece(texts, vocab_size, LLAMA_SPECIAL_IDS, normalization_rule_name="identity",
                                        remove_extra_whitespaces=False, user_defined_symbols=["\n"]))
        tokenizer = transformers.LlamaTokenizer(spm_path)  # loads sentencepiece: the pinned stack's tiny LLaMA only
        special, shape = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}, {}
    tokenizer.save_pretrained(out_dir)
    config = LlamaConfig(vocab_size=max(len(tokenizer), model_vocab_size or 0), hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, max_position_embeddings=1024, **special, **shape)
    _save_random_model(LlamaForCausalLM, config, out_dir, seed, device, dtype)
    return out_dir


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def byte_level_bpe_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer (GPT-2 / SmolLM2 style) trained on texts: <|endoftext|> 0 (unk),
    <|im_start|> 1 (bos), <|im_end|> 2 (eos); no pad token; ChatML chat template. Its alphabet is the
    bytes the texts hold, not all 256 (a tiny random model would mostly emit lone bytes of multi-byte
    characters, which decode to nothing readable); other bytes become unk."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE(unk_token=specials[0]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token=specials[0], bos_token=specials[1],
                                   eos_token=specials[2], chat_template=CHATML_TEMPLATE, model_max_length=1024)


def main(out_dir, data_dir=None, arch="t5", vocab_size=384, d_model=64, d_ff=128, num_layers=2, num_heads=4, seed=0):
    """arch: t5 (texts from *_T5.json) or llama (texts from the instruction files)."""
    if arch == "t5":
        build_tiny_t5(out_dir, corpus_from_data_dir(data_dir) if data_dir else None, vocab_size, d_model, d_ff,
                      num_layers, num_heads, seed=seed)
    elif arch == "llama":
        build_tiny_llama(out_dir, llama_corpus(data_dir) if data_dir else None, vocab_size, d_model, d_ff,
                         num_layers, num_heads, seed=seed)
    else:
        raise InputError(f"--arch must be t5 or llama, got {arch!r}")
    print(f"tiny {arch} written to {out_dir}")


if __name__ == "__main__":
    run(main)
