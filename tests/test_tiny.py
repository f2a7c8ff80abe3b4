import filecmp
import os

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from rkif.tiny import build_tiny_t5


def test_builder_is_seeded_and_loads_through_from_pretrained(tmp_path):
    texts = ["Which sport is this? Option: tennis, football.", "tennis racket serve", "football penalty"] * 20
    a = build_tiny_t5(str(tmp_path / "a"), texts, vocab_size=64, d_model=16, d_ff=32, num_heads=2, seed=3)
    b = build_tiny_t5(str(tmp_path / "b"), texts, vocab_size=64, d_model=16, d_ff=32, num_heads=2, seed=3)
    c = build_tiny_t5(str(tmp_path / "c"), texts, vocab_size=64, d_model=16, d_ff=32, num_heads=2, seed=4)
    assert filecmp.cmp(os.path.join(a, "spiece.model"), os.path.join(b, "spiece.model"), shallow=False)
    assert os.path.isfile(os.path.join(a, "tokenizer.json"))
    ma, mb, mc = (AutoModelForSeq2SeqLM.from_pretrained(d) for d in (a, b, c))
    sa, sb, sc = ma.state_dict(), mb.state_dict(), mc.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    tok = AutoTokenizer.from_pretrained(a)
    ids = tok("tennis racket")["input_ids"]
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.decode(ids, skip_special_tokens=True) == "tennis racket"
    assert ma.config.vocab_size == len(tok) and ma.config.d_model == 16
