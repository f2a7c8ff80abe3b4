"""Build a small T5 and its sentencepiece tokenizer from scratch (seeded, no downloads).

    python -m rkif.tiny OUT_DIR [--data_dir DIR] [--vocab_size 384] [--d_model 64] ...

The folder loads with the same from_pretrained calls as t5-large, so tests and the demo
exercise the real code path. tokenizer.json is written too, so loading needs no conversion.
"""

import glob
import io
import json
import os

import fire

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


def train_sentencepiece(texts, vocab_size, seed=0):
    """Serialized unigram model with T5's special ids: pad 0, eos 1, unk 2, no bos."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
        num_threads=1, minloglevel=2,
    )
    return buf.getvalue()


def build_tiny_t5(out_dir, texts=None, vocab_size=384, d_model=64, d_ff=128, num_layers=2, num_heads=4,
                  dropout_rate=0.0, seed=0):
    """Writes config, weights, spiece.model and tokenizer.json to out_dir; returns out_dir."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer, T5TokenizerFast

    os.makedirs(out_dir, exist_ok=True)
    spm_path = os.path.join(out_dir, "spiece.model")
    with open(spm_path, "wb") as f:
        f.write(train_sentencepiece(list(texts or DEFAULT_CORPUS), vocab_size, seed))
    slow = T5Tokenizer(spm_path, extra_ids=0, model_max_length=1024)
    fast = T5TokenizerFast(vocab_file=spm_path, extra_ids=0, model_max_length=1024, from_slow=True)
    fast.save_pretrained(out_dir)
    config = T5Config(
        vocab_size=len(slow), d_model=d_model, d_ff=d_ff, d_kv=d_model // num_heads, num_layers=num_layers,
        num_decoder_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate,
        decoder_start_token_id=slow.pad_token_id, pad_token_id=slow.pad_token_id, eos_token_id=slow.eos_token_id,
    )
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(out_dir)
    return out_dir


def main(out_dir, data_dir=None, vocab_size=384, d_model=64, d_ff=128, num_layers=2, num_heads=4, seed=0):
    texts = corpus_from_data_dir(data_dir) if data_dir else None
    build_tiny_t5(out_dir, texts, vocab_size, d_model, d_ff, num_layers, num_heads, seed=seed)
    print(f"tiny T5 written to {out_dir}")


if __name__ == "__main__":
    fire.Fire(main)
