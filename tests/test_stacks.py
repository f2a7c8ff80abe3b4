"""What differs between the two stacks (rkif.compat), and what must not: the released loss, GGUF files,
any causal LM's tokenizer. Each test runs on the stack it is collected on (make test runs both)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import TaskType
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from conftest import cli_args
from rkif import compat
from rkif.adapters import lora_parameters
from rkif.causal import load_tokenizer, released_answer, tokenize_causal
from rkif.errors import InputError
from rkif.lora import new_lora_model
from rkif.loop import FeatureList
from rkif.seq2seq import tokenize_seq2seq
from rkif.settings import KIFConfig, TrainingSettings
from rkif.training import BatchShape, trainer_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
current_only = pytest.mark.skipif(compat.STACK != "current", reason="the current stack (transformers 5.x) only")
pinned_only = pytest.mark.skipif(compat.STACK != "pinned", reason="the pinned stack (transformers 4.28.1) only")


def test_the_stack_is_the_installed_transformers():
    import transformers

    assert compat.STACK == ("pinned" if transformers.__version__ == "4.28.1" else "current")


def test_trainer_arguments_take_the_4_28_names_on_both_stacks(tmp_path):
    training = TrainingSettings(batch_size=4, micro_batch_size=2, num_epochs=1, learning_rate=1e-3, warmup_steps=0,
                                lr_scheduler_type="linear", eval_steps=5, logging_steps=5, group_by_length=True,
                                gradient_checkpointing=True)
    args = trainer_arguments(str(tmp_path), training, BatchShape(2, 2, 1), True, seed=1, fp16=False, bf16=False)
    assert compat.training_argument(args, "group_by_length") is True
    assert compat.training_argument(args, "gradient_checkpointing") is True
    assert compat.training_argument(args, "evaluation_strategy").value == "steps"
    if compat.STACK == "current":  # the released loss, not one normalised by the tokens of all ranks
        assert args.average_tokens_across_devices is False


def test_steps_per_epoch_of_each_stack():
    # 15 micro-batches, accumulation 2: 4.28.1 takes 7 whole windows (the 15th micro-batch's gradient carries
    # into the next epoch's first step); 5.x takes 8, the last of one micro-batch
    assert compat.optimizer_steps_per_epoch(15, 2) == (7 if compat.STACK == "pinned" else 8)
    assert compat.optimizer_steps_per_epoch(16, 2) == 8 and compat.optimizer_steps_per_epoch(1, 4) == 1


def _label_tokens(feature):
    return sum(label != -100 for label in feature["labels"])


def test_gradients_are_the_released_mean_over_each_micro_batch_divided_by_the_accumulation(tiny_t5, tmp_path):
    """Two examples with different numbers of label tokens, one per micro-batch, accumulation 2: the inner
    importance sees the gradient of (mean loss of one + mean loss of the other) / 2, as 4.28.1 computed it.
    transformers 5.x by itself would normalise by the label tokens of the whole window (num_items_in_batch)."""
    from rkif.kif_trainer import RecurrentKIFTrainer

    tok = AutoTokenizer.from_pretrained(tiny_t5)
    records = [{"input": "weather today: sunny", "output": "sunny"},
               {"input": "weather today: snow and rain", "output": "snow and rain and wind and sleet"}]
    features = tokenize_seq2seq(records, tok, 64, 32)
    assert _label_tokens(features[0]) != _label_tokens(features[1])
    torch.manual_seed(0)
    model = new_lora_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), r=4, alpha=8, dropout=0.0,
                           target_modules=["q", "v"], task_type=TaskType.SEQ_2_SEQ_LM)
    with torch.no_grad():  # B = 0 would give A no gradient
        for n, p in lora_parameters(model).items():
            p.add_(0.05 * torch.randn_like(p))
    collate = DataCollatorForSeq2Seq(tok, return_tensors="pt", padding=True)
    expected = {n: torch.zeros_like(p) for n, p in lora_parameters(model).items()}
    for f in features:
        model.zero_grad()
        model(**collate([dict(f)])).loss.backward()
        for n, p in lora_parameters(model).items():
            expected[n] += p.grad / 2
    model.zero_grad()
    args = compat.training_arguments(output_dir=str(tmp_path), per_device_train_batch_size=1,
                                     gradient_accumulation_steps=2, max_steps=1, learning_rate=0.0,
                                     max_grad_norm=0.0, report_to="none", save_strategy="no", seed=3)
    trainer = RecurrentKIFTrainer(model=model, args=args, train_dataset=FeatureList(features), data_collator=collate,
                                  kif_config=KIFConfig(inner_iterations=100), memory_dataset=features)
    trainer.train()
    beta1 = KIFConfig.beta1
    params = lora_parameters(model)  # unchanged: learning rate 0
    for n, s in trainer.inner_tracker.sensitivity.items():
        torch.testing.assert_close(s, (1 - beta1) * (params[n].detach() * expected[n]).abs(), rtol=1e-4, atol=1e-10)


# --- any causal LM: the model's tokenizer, pad, EOS, a BPE merge across the prompt's end -------------

def test_the_causal_tokenizer_pads_with_an_id_that_is_not_eos(tiny_llama):
    tok = load_tokenizer(tiny_llama)
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    if compat.STACK == "pinned":
        assert tok.pad_token_id == 0 and type(tok).__name__ == "LlamaTokenizer"  # as released
    else:  # SmolLM2's kind has no pad token: its unk token pads
        assert tok.pad_token_id == tok.unk_token_id and tok.eos_token == "<|im_end|>"


def test_decoding_strips_the_models_own_eos():
    assert released_answer("<|im_start|>x ### Response:\nsunny<|im_end|>", "<|im_end|>") == "sunny"
    assert released_answer("<s> x ### Response:\nsunny</s>") == "sunny"


class MergingTokenizer:
    """A stand-in for a BPE tokenizer that merges across "\\n" + " ", as byte-level BPE does (ids by text)."""

    eos_token_id = 99

    def __call__(self, text, truncation=False, max_length=None, padding=False, add_special_tokens=True):
        pieces, i = [], 0
        while i < len(text):
            if text.startswith("\n ", i):  # the merge across the boundary
                pieces.append(1000)
                i += 2
            else:
                pieces.append(ord(text[i]))
                i += 1
        if truncation and max_length:
            pieces = pieces[:max_length]
        return {"input_ids": pieces, "attention_mask": [1] * len(pieces)}


def test_labels_are_exactly_the_output_when_the_prompt_merges_with_it():
    tok = MergingTokenizer()
    record = {"instruction": "Say it.", "input": "", "output": " sunny"}  # the output starts with a blank
    f = tokenize_causal([record], tok, cutoff_len=512)[0]
    from rkif.causal import alpaca_prompt

    prompt_ids = tok(alpaca_prompt("Say it.", ""))["input_ids"]
    assert f["input_ids"][:len(prompt_ids)] == prompt_ids  # what generation is given, untouched
    labelled = [i for i, label in zip(f["input_ids"], f["labels"]) if label != -100]
    assert labelled == [ord(c) for c in " sunny"] + [tok.eos_token_id]
    assert f["labels"][:len(prompt_ids)] == [-100] * len(prompt_ids)
    # without a merge the released rule is unchanged: one joint tokenization
    plain = tokenize_causal([{**record, "output": "sunny"}], tok, cutoff_len=512)[0]
    assert plain["input_ids"] == tok(alpaca_prompt("Say it.", "", "sunny"))["input_ids"] + [tok.eos_token_id]


# --- GGUF files ------------------------------------------------------------------------------------

@pinned_only
def test_a_gguf_file_is_refused_on_the_pinned_stack_before_any_work(tmp_path, bench_dir):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "src", "finetune_KIF_llama.py"),
                        *cli_args(str(gguf), bench_dir, str(out), 0)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "GGUF files load on the current stack only" in p.stderr and "make install STACK=current" in p.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory):
    from gguf_files import write_llama_gguf

    folder = tmp_path_factory.mktemp("gguf")
    return write_llama_gguf(tiny_llama, str(folder / "tiny-llama.F32.gguf"))


@current_only
def test_a_gguf_file_gives_the_logits_of_the_same_weights_from_safetensors(tiny_llama, tiny_gguf):
    folder, gguf = compat.pretrained_source(tiny_gguf)
    assert gguf == {"gguf_file": "tiny-llama.F32.gguf"}
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **gguf).eval()
    assert loaded.config.num_key_value_heads == reference.config.num_key_value_heads < loaded.config.num_attention_heads
    tok, tok_gguf = load_tokenizer(tiny_llama), load_tokenizer(tiny_gguf)
    text = "### Instruction:\nWhat is the weather like?\n\n### Response:\n"
    assert tok(text)["input_ids"] == tok_gguf(text)["input_ids"]
    assert (tok_gguf.eos_token, tok_gguf.pad_token_id) == (tok.eos_token, tok.pad_token_id)
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@current_only
def test_a_gguf_file_trains_and_generates_through_the_scripts(tiny_gguf, bench_dir, tmp_path):
    from rkif.commands import entry_points

    finetune_llama_main, generate_avgperf_llama_main = entry_points.train_llama, entry_points.generate_avgperf_llama

    out = str(tmp_path / "out")
    for t in (0, 1, 2):
        finetune_llama_main(cli_args(tiny_gguf, bench_dir, out, t, cutoff_len=128, val_set_size=0, num_epochs=1))
    run = os.path.join(out, "tiny-llama.F32lora_RKIF_dataset_id_order")
    info = json.load(open(os.path.join(run, "1-sport", "run_info.json")))
    assert info["kif"]["fusions"] > 0 and info["settings"]["base_model"] == tiny_gguf
    generate_avgperf_llama_main([f"--base_model={tiny_gguf}", f"--data_dir={bench_dir}", f"--output_path={out}",
                                 f"--dataset_id={os.path.join(bench_dir, 'order.json')}", "--max_new_tokens=4",
                                 "--cutoff_len=128"])
    folders = [f for f in os.listdir(out) if "avgPerf" in f]
    assert len(folders) == 1, os.listdir(out)
    for task in ("0-weather", "1-sport", "2-food"):
        with open(os.path.join(out, folders[0], f"{task}.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        assert len(rows) == 8  # every test example of the fixture benchmark


@current_only
def test_a_missing_gguf_file_is_one_error_line(tmp_path):
    from rkif.base_model import check_base_model

    with pytest.raises(InputError, match="GGUF file .*absent.gguf does not exist"):
        check_base_model(str(tmp_path / "absent.gguf"))


# --- --prompt_template_name chatml -----------------------------------------------------------------

@current_only
def test_chatml_examples_are_the_chat_template_then_the_output_and_eos(tiny_llama):
    tok = load_tokenizer(tiny_llama)
    record = {"instruction": "What is the weather?", "input": "It rains.", "output": "rainy"}
    f = tokenize_causal([record], tok, cutoff_len=512, template="chatml")[0]
    prompt = "<|im_start|>user\nWhat is the weather?\n\nIt rains.<|im_end|>\n<|im_start|>assistant\n"
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert f["input_ids"][:len(prompt_ids)] == prompt_ids and f["labels"][:len(prompt_ids)] == [-100] * len(prompt_ids)
    labelled = [i for i, label in zip(f["input_ids"], f["labels"]) if label != -100]
    assert tok.decode(labelled) == "rainy<|im_end|>"


@current_only
def test_chatml_trains_and_generates_through_the_scripts(tiny_llama, bench_dir, tmp_path):
    from rkif.commands import entry_points

    finetune_llama_main, generate_bwt_llama_main = entry_points.train_llama, entry_points.generate_bwt_llama

    out = str(tmp_path / "out")
    finetune_llama_main(cli_args(tiny_llama, bench_dir, out, 0, cutoff_len=128, val_set_size=0, num_epochs=1,
                                 prompt_template_name="chatml"))
    generate_bwt_llama_main([f"--base_model={tiny_llama}", f"--data_dir={bench_dir}", f"--output_path={out}",
                             f"--dataset_id={os.path.join(bench_dir, 'order.json')}", "--max_new_tokens=4",
                             "--cutoff_len=128", "--prompt_template_name=chatml", "--service_begin_id=0"])
    folder = [f for f in os.listdir(out) if "bwt" in f]
    with open(os.path.join(out, folder[0], "0-weather.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 8 and not any("<|im_end|>" in json.dumps(r) for r in rows)


def test_chatml_needs_a_chat_template(tiny_llama, bench_dir, tmp_path):
    from rkif.causal import check_chat_template

    tok = load_tokenizer(tiny_llama)
    if compat.STACK == "pinned":  # LLaMA-2's sentencepiece tokenizer of 4.28.1 has none
        with pytest.raises(InputError, match="chatml: the tokenizer of .* has no chat template; use alpaca"):
            check_chat_template(tok, "chatml", tiny_llama)
    else:
        check_chat_template(tok, "chatml", tiny_llama)
    check_chat_template(tok, "alpaca", tiny_llama)


def test_no_module_but_compat_tests_a_version():
    """Every version difference lives in rkif.compat: no other module of the package reads a library's
    version or the stack to decide what to do (run_info.py records the versions; __init__ declares ours)."""
    import re

    package = os.path.join(ROOT, "src", "rkif")
    found = []
    pattern = re.compile(r"__version__|importlib\.metadata\.version|version\.parse|\bCURRENT\b|STACK\s*[=!]=|"
                         r"transformers\.__version|hasattr\(transformers")
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, package)
            if not name.endswith(".py") or rel in ("compat.py", "run_info.py", "__init__.py"):
                continue
            for number, line in enumerate(open(path), 1):
                if pattern.search(line):
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert found == []
