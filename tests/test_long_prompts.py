"""Examples and test inputs that reach the cutoff: the released label rule, the shorten_input rule,
no NaN loss from a batch without label tokens, and generation that feeds whole inputs as released."""

import json
import math
import os

from rkif.compat import save_adapter
import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, TrainingArguments

from conftest import random_lora_adapter
from rkif.commands import entry_points
from rkif.causal import (ELLIPSIS, alpaca_prompt, causal_predictor_factory, greedy_causal, load_tokenizer,
                         long_prompt_counts, released_answer, shortened_input, tokenize_causal)
from rkif.backbones import T5
from rkif.generate import generation_command

generate_avgperf_t5 = generation_command(T5, "avgPerf")
from rkif.scoring import evaluate
from rkif.run_folders import adapter_dir
from rkif.loop import FeatureList
from rkif.kif_trainer import RecurrentKIFTrainer

llama_main = entry_points.train_llama

LONG_INPUT = "Text: " + " ".join(["bright sunny day with clear sky"] * 12) + "\n\nAnswer:"
SHORT = {"id": "s_0", "instruction": "What is the weather? Option: sunny, rainy.\n", "input": "Text: rain\n\nAnswer:",
         "output": "rainy"}
LONG = {**SHORT, "id": "l_0", "input": LONG_INPUT, "output": "sunny and bright"}


@pytest.fixture(scope="module")
def tok(tiny_llama):
    return load_tokenizer(tiny_llama)


def released_rule(record, tokenizer, cutoff_len, train_on_inputs, add_eos_token):
    """The released generate_and_tokenize_prompt, restated: full text tokenized with the EOS default
    of its tokenize() (always on), prompt tokenized with add_eos_token and shortened by one if so."""

    def tokenize(text, add_eos):
        ids = tokenizer(text, truncation=True, max_length=cutoff_len)["input_ids"]
        if add_eos and ids[-1] != tokenizer.eos_token_id and len(ids) < cutoff_len:
            ids = ids + [tokenizer.eos_token_id]
        return ids

    ids = tokenize(alpaca_prompt(record["instruction"], record["input"], record["output"]), True)
    labels = list(ids)
    if not train_on_inputs:
        n = len(tokenize(alpaca_prompt(record["instruction"], record["input"]), add_eos_token))
        n -= 1 if add_eos_token else 0
        labels = [-100] * n + labels[n:]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def lengths(tok, record):
    prompt = len(tok(alpaca_prompt(record["instruction"], record["input"]))["input_ids"])
    full = len(tok(alpaca_prompt(record["instruction"], record["input"], record["output"]))["input_ids"])
    return prompt, full


@pytest.mark.parametrize("train_on_inputs", [False, True])
@pytest.mark.parametrize("add_eos_token", [True, False])
def test_released_label_rule_below_at_and_over_the_cutoff(tok, train_on_inputs, add_eos_token):
    P, F = lengths(tok, LONG)
    assert F > P + 1
    cutoffs = [F + 5, F + 1, F, F - 1, (P + F) // 2, P + 2, P + 1, P, P - 1, P // 2]
    for cutoff in cutoffs:
        got = tokenize_causal([LONG], tok, cutoff, train_on_inputs, add_eos_token)[0]
        assert got == released_rule(LONG, tok, cutoff, train_on_inputs, add_eos_token), cutoff
        assert len(got["input_ids"]) == min(cutoff, F + 1)
    if not train_on_inputs:
        # a prompt that alone reaches the cutoff: one labelled token (the last) with add_eos_token, none without
        for cutoff in (P, P - 1, P // 2):
            labelled = [x for x in tokenize_causal([LONG], tok, cutoff, False, add_eos_token)[0]["labels"] if x != -100]
            assert len(labelled) == (1 if add_eos_token else 0)
        roomy = tokenize_causal([LONG], tok, F + 1, False, add_eos_token)[0]
        assert sum(x != -100 for x in roomy["labels"]) == F + 1 - P  # the response and EOS


def test_released_labels_pinned_by_hand(tok):
    """The released rule's three cases, written out: room for everything, a response cut at the
    cutoff, a prompt that fills the cutoff (its last token keeps its label; none without add_eos_token)."""
    P, F = lengths(tok, LONG)
    ids = tok(alpaca_prompt(LONG["instruction"], LONG["input"], LONG["output"]))["input_ids"]
    eos = tok.eos_token_id
    roomy = tokenize_causal([LONG], tok, F + 1)[0]
    assert roomy["input_ids"] == ids + [eos] and roomy["labels"] == [-100] * P + ids[P:] + [eos]
    cut = tokenize_causal([LONG], tok, P + 2)[0]
    assert cut["input_ids"] == ids[:P + 2] and cut["labels"] == [-100] * P + ids[P:P + 2]
    full = tokenize_causal([LONG], tok, P)[0]
    assert full["input_ids"] == ids[:P] and full["labels"] == [-100] * (P - 1) + [ids[P - 1]]
    assert tokenize_causal([LONG], tok, P, add_eos_token=False)[0]["labels"] == [-100] * P


def test_shorten_input_gives_up_the_input_when_nothing_of_it_fits(tok):
    no_input = len(tok(alpaca_prompt(LONG["instruction"], "", LONG["output"]))["input_ids"]) + 1
    assert shortened_input(LONG, tok, no_input) == ""  # even " ... " does not fit: the no-input template
    f = tokenize_causal([LONG], tok, no_input, long_prompts="shorten_input")[0]
    assert f == released_rule({**LONG, "input": ""}, tok, no_input, False, True)
    assert f["input_ids"][-1] == tok.eos_token_id


def test_shorten_input_keeps_the_whole_response(tok):
    P, F = lengths(tok, LONG)
    cutoff = (P + F) // 2 - 20  # the full text overruns; the prompt without most of its input fits
    shorter = shortened_input(LONG, tok, cutoff)
    assert ELLIPSIS in shorter and shorter.startswith("Text: bright") and shorter.endswith("\n\nAnswer:")
    f = tokenize_causal([LONG], tok, cutoff, long_prompts="shorten_input")[0]
    assert len(f["input_ids"]) <= cutoff and f["input_ids"][-1] == tok.eos_token_id
    response = [x for x in f["labels"] if x != -100]
    assert tok.decode(response[:-1]).strip() == LONG["output"] and response[-1] == tok.eos_token_id
    assert f == released_rule({**LONG, "input": shorter}, tok, cutoff, False, True)
    # an example that fits is untouched, bitwise the released features
    assert tokenize_causal([SHORT], tok, cutoff, long_prompts="shorten_input") == \
        tokenize_causal([SHORT], tok, cutoff)
    with pytest.raises(Exception, match="--long_prompts must be one of"):
        tokenize_causal([SHORT], tok, cutoff, long_prompts="middle")


def test_long_prompt_counts(tok):
    P, F = lengths(tok, LONG)
    over_prompt = {**LONG, "id": "l_1", "input": LONG_INPUT + " " + LONG_INPUT}
    cutoff = P + 2  # LONG keeps two response tokens; over_prompt's prompt alone is longer
    assert lengths(tok, over_prompt)[0] > cutoff and lengths(tok, SHORT)[1] + 1 <= cutoff
    c = long_prompt_counts([SHORT, LONG, over_prompt], tok, cutoff)
    assert c["examples"] == 3 and c["released"] == {"response_cut": 2, "no_response": 1}
    assert c["shorten_input"] == {"input_cut": 2, "response_cut": 0}


def test_a_batch_without_label_tokens_has_loss_zero_not_nan(tiny_llama, tok, tmp_path):
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                      task_type=TaskType.CAUSAL_LM))
    P, _ = lengths(tok, LONG)
    empty = tokenize_causal([LONG, LONG], tok, P - 3, add_eos_token=False)  # no label token at all
    full = tokenize_causal([SHORT, LONG], tok, 512)
    assert all(x == -100 for f in empty for x in f["labels"])
    collate = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt", padding=True)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none")
    trainer = RecurrentKIFTrainer(model=model, args=args, data_collator=collate,
                                  eval_dataset=FeatureList(empty + full))
    model.train()
    nothing = trainer.compute_loss(model, collate(empty))
    assert torch.isnan(model(**collate(empty)).loss)  # what the model itself returns: 0/0
    assert nothing.item() == 0.0
    nothing.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters() if p.requires_grad)
    batch = collate(full)
    assert torch.equal(trainer.compute_loss(model, batch), model(**batch).loss)  # other batches bitwise
    model.eval()
    with torch.no_grad():
        real = model(**collate(full)).loss.item()
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] == pytest.approx(real / 2, rel=1e-5)


def test_training_with_prompts_over_the_cutoff_logs_finite_losses(tiny_llama, bench_dir, tmp_path):
    """Every prompt overruns the cutoff and add_eos_token is off: no example has a label token."""
    out = str(tmp_path / "out")
    llama_main([f"--base_model={tiny_llama}", f"--data_dir={bench_dir}",
                f"--dataset_id={os.path.join(bench_dir, 'order.json')}", "--task_id=0", f"--output_path={out}",
                "--method_name=SeqLoRA", "--num_epochs=1", "--batch_size=4", "--micro_batch_size=2",
                "--eval_steps=3", "--warmup_steps=0", "--logging_steps=1", "--cutoff_len=20",
                "--add_eos_token=False"])
    task = os.path.join(out, f"{os.path.basename(tiny_llama)}lora_SeqLoRA_dataset_id_order", "0-weather")
    info = json.load(open(os.path.join(task, "run_info.json")))
    assert info["train_metrics"]["train_loss"] == 0.0 and info["best_eval_loss"] == 0.0
    assert info["long_prompts"]["rule"] == "released"
    assert info["long_prompts"]["train"]["released"] == {"response_cut": 24, "no_response": 24}
    assert info["long_prompts"]["validation"]["examples"] == 8
    checkpoints = [d for d in os.listdir(task) if d.startswith("checkpoint-")]
    history = json.load(open(os.path.join(task, sorted(checkpoints)[-1], "trainer_state.json")))["log_history"]
    logged = [h[k] for h in history for k in ("loss", "eval_loss") if k in h]
    assert len(logged) > 3 and all(v == 0.0 for v in logged)


def manual_greedy(model, tok, ids, steps):
    """Greedy decoding by hand (argmax of the last position, appended, until EOS), the whole sequence
    decoded with its special tokens and the answer taken after "### Response:", as released."""
    seq = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(input_ids=seq).logits[0, -1].argmax().item()
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
            if nxt == tok.eos_token_id:
                break
    return tok.decode(seq[0].tolist()).split("### Response:")[1].strip().replace("</s>", "")


def test_released_answer():
    assert released_answer("<s> Below is.\n\n### Response:\nsunny</s>") == "sunny"
    assert released_answer("<s> x ### Response:\n sun<s> ny</s>") == "sun<s> ny"  # special tokens kept
    assert released_answer("<s> x ### Response: a ### Response: b") == "a"
    assert released_answer("no marker") == ""


@pytest.fixture(scope="module")
def llama_adapter(tiny_llama, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("llama_adapter"))
    random_lora_adapter(AutoModelForCausalLM, tiny_llama, path, ["q_proj", "v_proj"], TaskType.CAUSAL_LM, 0.5)
    return path


def test_llama_generation_feeds_the_whole_prompt(tiny_llama, tok, llama_adapter, capsys):
    records = [LONG, SHORT]
    P, _ = lengths(tok, LONG)
    whole = causal_predictor_factory(tiny_llama, "fp32", cutoff_len=16, max_new_tokens=6)(llama_adapter)
    cut = causal_predictor_factory(tiny_llama, "fp32", cutoff_len=16, max_new_tokens=6,
                                   truncate_inputs=True)(llama_adapter)
    assert whole.lengths(records)[0] == P > whole.training_cutoff == 16
    merged = AutoModelForCausalLM.from_pretrained(tiny_llama)
    from peft import PeftModel
    merged = PeftModel.from_pretrained(merged, llama_adapter).merge_and_unload().eval()
    ids = tok(alpaca_prompt(LONG["instruction"], LONG["input"]))["input_ids"]
    expected = manual_greedy(merged, tok, ids, 6)
    assert whole(records)[0] == expected
    # --truncate_inputs: BOS (LLaMA-2's tokenizer adds one) and the prompt's last 15 tokens, else the last 16
    short_ids = ids[:1] + ids[-15:] if ids[0] == tok.bos_token_id else ids[-16:]
    expected_cut = manual_greedy(merged, tok, short_ids, 6)
    assert cut(records)[0] == expected_cut
    # a prompt over the model's context window: cut to window - max_new_tokens, with a warning naming it
    merged.config.max_position_embeddings = P - 4
    capsys.readouterr()
    got = greedy_causal(merged, tok, "cpu", [alpaca_prompt(LONG["instruction"], LONG["input"])], max_new_tokens=6,
                        names=["l_0"])
    err = capsys.readouterr().err
    assert "warning: l_0: the prompt has" in err and f"cut to {P - 10} tokens" in err
    keep = P - 10
    window_ids = ids[:1] + ids[len(ids) - keep + 1:] if ids[0] == tok.bos_token_id else ids[len(ids) - keep:]
    assert got == [manual_greedy(merged, tok, window_ids, 6)]


def released_t5_answer(tok, ids):
    """The released T5 generator's answer: decoded with special tokens, </s> and <pad> removed, stripped."""
    return tok.decode(ids).replace("</s>", "").replace("<pad>", "").strip()


def test_t5_generation_feeds_whole_inputs_and_counts_long_ones(tiny_t5, bench_dir, tmp_path):
    from transformers import AutoTokenizer

    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"],
                                            task_type=TaskType.SEQ_2_SEQ_LM))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    out = str(tmp_path / "out")
    tasks = json.load(open(os.path.join(bench_dir, "order.json")))
    order = os.path.join(bench_dir, "order.json")
    save_adapter(model, adapter_dir(out, tiny_t5, "RKIF", "order", len(tasks) - 1, tasks[-1]))
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    cutoff = 12
    common = dict(base_model=tiny_t5, dataset_id=order, method_name="RKIF", data_dir=bench_dir, gen_batch_size=4,
                  max_input_length=cutoff, max_length=8, gen_precision="fp32")
    import shutil

    shutil.copytree(out, out + "_cut")
    whole_dir = generate_avgperf_t5(output_path=out, **common)
    info = json.load(open(os.path.join(whole_dir, "generation_info.json")))
    merged = model.merge_and_unload().eval()
    n_long = 0
    for i, task in enumerate(tasks):
        test = json.load(open(os.path.join(bench_dir, "test", f"{task}_T5.json")))
        n = [len(tok(r["input"])["input_ids"]) for r in test]
        over = sum(x > cutoff for x in n)
        n_long += over
        assert info[f"{i}-{task}"] == {"examples": len(test), "over_training_cutoff": over,
                                       "training_cutoff": cutoff, "longest_input_tokens": max(n)}
        preds = [json.loads(line)["pred"] for line in open(os.path.join(whole_dir, f"{i}-{task}.jsonl"))]
        r = max(range(len(test)), key=lambda k: n[k])  # the longest input, fed whole
        with torch.no_grad():
            enc = tok(test[r]["input"], return_tensors="pt")
            expect = released_t5_answer(tok, merged.generate(**enc, max_length=8)[0])
        assert preds[r] == expect
    assert n_long > 0
    cut_dir = generate_avgperf_t5(output_path=out + "_cut", truncate_inputs=True, **{**common, "gen_batch_size": 1})
    test = json.load(open(os.path.join(bench_dir, "test", f"{tasks[0]}_T5.json")))
    preds = [json.loads(line)["pred"] for line in open(os.path.join(cut_dir, f"0-{tasks[0]}.jsonl"))]
    with torch.no_grad():
        for r, pred in zip(test, preds):
            enc = tok(r["input"], return_tensors="pt", truncation=True, max_length=cutoff)
            assert pred == released_t5_answer(tok, merged.generate(**enc, max_length=8)[0])
    summary = evaluate("avgPerf", base_model=tiny_t5, dataset_id=order, method_name="RKIF", data_dir=bench_dir,
                       output_path=out, quiet=True)
    assert summary["test_inputs_over_training_cutoff"] == {k: v["over_training_cutoff"] for k, v in info.items()}
    metrics = json.load(open(os.path.join(whole_dir, "metrics.json")))
    assert metrics["test_inputs_over_training_cutoff"] == summary["test_inputs_over_training_cutoff"]


def test_the_window_cut_keeps_bos_found_by_its_id():
    from rkif.causal import cut_prompt_ids

    assert cut_prompt_ids([1, 5, 6, 7, 8], 3, bos_id=1) == [1, 7, 8]  # LLaMA-2: BOS first, kept
    assert cut_prompt_ids([5, 6, 7, 8], 3, bos_id=1) == [6, 7, 8]  # a tokenizer that adds no BOS: nothing kept
    assert cut_prompt_ids([5, 6, 7, 8], 3, bos_id=None) == [6, 7, 8]  # nor one without a BOS token
    assert cut_prompt_ids([1, 5], 3, bos_id=1) == [1, 5] and cut_prompt_ids([1, 5], None, bos_id=1) == [1, 5]
