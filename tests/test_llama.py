"""The LLaMA (causal LM) path on a tiny LLaMA built locally: features, training, generation, metrics."""

import json
import os
import shutil

import pytest
import torch
from peft import TaskType
from transformers import AutoModelForCausalLM

from rkif.compat import STACK
from conftest import random_lora_adapter
from rkif.commands import entry_points
from rkif.causal import alpaca_prompt, greedy_causal, load_causal_for_generation, load_tokenizer, tokenize_causal
from rkif.pipeline import run_order

llama_main = entry_points.train_llama

RECORD = {"id": "w_0", "instruction": "What is the weather? Choose one from the option. Option: sunny, rainy.\n",
          "input": "Text: bright day\n\nAnswer:", "output": "sunny"}


@pytest.fixture(scope="module")
def tok(tiny_llama):
    return load_tokenizer(tiny_llama)


def test_alpaca_prompt_text():
    assert alpaca_prompt("Do X.", "some input") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nDo X.\n\n"
        "### Input:\nsome input\n\n### Response:\n")
    assert alpaca_prompt("Do X.", "", "out").endswith("### Instruction:\nDo X.\n\n### Response:\nout")
    assert alpaca_prompt("Do X.", "").startswith("Below is an instruction that describes a task. Write")


def test_tokenizer_settings(tok):
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.padding_side) == (0, 1, 2, "left")


def test_loss_only_on_response_tokens(tok):
    prompt_ids = tok(alpaca_prompt(RECORD["instruction"], RECORD["input"]))["input_ids"]
    n = len(prompt_ids)
    f = tokenize_causal([RECORD], tok, cutoff_len=512)[0]
    ids, labels = f["input_ids"], f["labels"]
    assert ids[:n] == prompt_ids and ids[-1] == tok.eos_token_id
    assert (ids[0] == tok.bos_token_id) == (STACK == "pinned")  # LLaMA-2's tokenizer adds BOS, SmolLM2's kind not
    assert labels[:n] == [-100] * n
    assert labels[n:] == ids[n:] and len(labels) == len(ids) == len(f["attention_mask"])
    assert tok.decode(ids[n:-1]).strip() == "sunny"
    both = tokenize_causal([RECORD], tok, cutoff_len=512, train_on_inputs=True)[0]
    assert both["labels"] == both["input_ids"] == ids


def test_eos_at_the_cutoff_and_truncation(tok):
    full = tok(alpaca_prompt(RECORD["instruction"], RECORD["input"], RECORD["output"]))["input_ids"]
    L = len(full)
    exact = tokenize_causal([RECORD], tok, cutoff_len=L)[0]
    assert exact["input_ids"] == full  # no room left: no EOS
    roomy = tokenize_causal([RECORD], tok, cutoff_len=L + 1)[0]
    assert roomy["input_ids"] == full + [tok.eos_token_id]
    # as released, add_eos_token changes only the prompt masking: the full text still gets its EOS
    assert tokenize_causal([RECORD], tok, cutoff_len=L + 1, add_eos_token=False)[0]["input_ids"] == roomy["input_ids"]
    cut = tokenize_causal([RECORD], tok, cutoff_len=10)[0]
    # only prompt survives: the released rule leaves the last token its label
    assert cut["input_ids"] == full[:10] and cut["labels"] == [-100] * 9 + [full[9]]


def test_batched_left_padded_greedy_equals_one_at_a_time(tiny_llama, bench_dir, tmp_path):
    random_lora_adapter(AutoModelForCausalLM, tiny_llama, tmp_path / "adapter", ["q_proj", "v_proj"],
                        TaskType.CAUSAL_LM, 0.5)
    m, tok, device = load_causal_for_generation(tiny_llama, str(tmp_path / "adapter"))
    with open(os.path.join(bench_dir, "test", "sport.json")) as f:
        recs = json.load(f)
    prompts = [alpaca_prompt(r["instruction"], r["input"]) for r in recs]
    prompts += [alpaca_prompt(r["instruction"][:20], "") for r in recs]  # different lengths: left padding
    single = [greedy_causal(m, tok, device, [p], max_new_tokens=12)[0] for p in prompts]
    batched = []
    for i in range(0, len(prompts), 5):
        batched += greedy_causal(m, tok, device, prompts[i:i + 5], max_new_tokens=12)
    assert batched == single and len(set(single)) > 1
    assert not any("### Response" in s for s in single)


def test_two_tasks_end_to_end_with_generation_and_metrics(tiny_llama, bench_dir, tmp_path):
    order = tmp_path / "two.json"
    order.write_text(json.dumps(["weather", "sport"]))
    out = str(tmp_path / "out")
    summary = run_order(backbone="llama", base_model=tiny_llama, dataset_id=str(order), methods="RKIF",
                        data_dir=bench_dir, output_path=out, num_epochs=2, batch_size=4, micro_batch_size=2,
                        train_batch_size_outer=4, inner_iterations=2, outer_iterations=2, memory_data_ratio=25,
                        eval_steps=3, warmup_steps=1, logging_steps=100, max_new_tokens=8, gen_batch_size=4)
    run = os.path.join(out, f"{os.path.basename(tiny_llama)}lora_RKIF_dataset_id_two")
    info = json.load(open(os.path.join(run, "1-sport", "run_info.json")))
    assert info["kif"]["fusions"] == info["global_steps"] // 2 > 0 and info["kif"]["memory_size"] == 6
    assert info["num_validation_examples"] == 16 and info["precision"] == {"fp16": False, "bf16": False}
    weights = torch.load(os.path.join(run, "1-sport", "adapter_model.bin"))
    assert len(weights) == 8 and all("lora_" in k for k in weights)  # 2 layers x (q_proj, v_proj) x (A, B)
    preds = [json.loads(line) for line in open(run + "_avgPerf/1-sport.jsonl")]
    assert len(preds) == 8 and all(set(p) == {"id", "gold", "pred"} for p in preds)
    accs = []
    for i, t in enumerate(["weather", "sport"]):
        rows = [json.loads(line) for line in open(f"{run}_avgPerf/{i}-{t}.jsonl")]
        accs.append(sum(r["pred"].strip().lower() == r["gold"].lower() for r in rows) / len(rows))
    assert summary["RKIF"]["OP"] == pytest.approx(sum(accs) / 2)
    bwt_rows = [json.loads(line) for line in open(f"{run}_bwt/0-weather.jsonl")]
    a00 = sum(r["pred"].strip().lower() == r["gold"].lower() for r in bwt_rows) / len(bwt_rows)
    assert summary["RKIF"]["BWT"] == pytest.approx(accs[0] - a00)


@pytest.mark.parametrize("flags, message", [
    ({}, "record 0 (id weather_0) has no 'instruction' field"),
    ({"precision": "bf16"}, "--precision bf16 needs a GPU"),
    ({"load_8bit": True}, "--load_8bit needs the optional bitsandbytes package and a GPU"),
    ({"prompt_template_name": "vicuna"}, "unknown template 'vicuna'"),
])
def test_bad_input(flags, message, tiny_llama, bench_dir, tmp_path, capsys):
    data = str(tmp_path / "data")
    shutil.copytree(bench_dir, data)
    if not flags:
        path = os.path.join(data, "train", "weather.json")
        recs = json.load(open(path))
        del recs[0]["instruction"]
        json.dump(recs, open(path, "w"))
    args = [f"--base_model={tiny_llama}", f"--data_dir={data}", f"--dataset_id={os.path.join(data, 'order.json')}",
            "--task_id=0", f"--output_path={tmp_path / 'out'}"] + [f"--{k}={v}" for k, v in flags.items()]
    with pytest.raises(SystemExit) as e:
        llama_main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_scripts_llama_train_and_score(tiny_llama, bench_dir, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    order = tmp_path / "pair.json"
    order.write_text(json.dumps(["food", "weather"]))
    env = {**os.environ, "PYTHON": sys.executable, "BASE_MODEL": tiny_llama, "GPU": "cpu", "DATA_DIR": bench_dir,
           "OUTPUT_PATH": str(tmp_path / "out"), "DATASET_IDS": str(order), "BATCH_SIZE": "4"}
    fast = ["--num_epochs=1", "--batch_size=4", "--micro_batch_size=2", "--train_batch_size_outer=4",
            "--inner_iterations=2", "--outer_iterations=1", "--memory_data_ratio=25", "--eval_steps=3",
            "--warmup_steps=1"]

    def run(script, *args):
        return subprocess.run(["bash", os.path.join(root, "scripts_llama", script), *args], env=env,
                              capture_output=True, text=True, timeout=600)

    p = run("run_train_KIF_llama.sh", *fast)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("train: order") == 2
    assert run("run_train_KIF_llama.sh", *fast).stdout.count("skip: order") == 2
    for script, key in (("run_test_KIF_llama_avgPer.sh", "OP: "), ("run_test_KIF_llama_bwt.sh", "BWT: ")):
        p = run(script, "--max_new_tokens=6")
        assert p.returncode == 0, p.stderr[-2000:]
        assert key in p.stdout
    run_dir = tmp_path / "out" / f"{os.path.basename(tiny_llama)}lora_RKIF_dataset_id_pair"
    assert (run_dir.parent / (run_dir.name + "_bwt") / "metrics.json").is_file()


@pytest.mark.parametrize("method", ["OLoRA", "EWC"])
def test_baselines_on_llama(method, tiny_llama, bench_dir, tmp_path):
    """The baselines' seam is backbone-independent: two LLaMA tasks, the earlier branch frozen / the Fisher saved."""
    import torch

    out = str(tmp_path / "out")
    for t in (0, 1):
        llama_main([f"--base_model={tiny_llama}", f"--data_dir={bench_dir}",
                    f"--dataset_id={os.path.join(bench_dir, 'order.json')}", f"--task_id={t}", f"--output_path={out}",
                    f"--method_name={method}", "--num_epochs=1", "--batch_size=4", "--micro_batch_size=2",
                    "--val_set_size=0", "--logging_steps=100", "--eval_steps=100", "--warmup_steps=0",
                    "--learning_rate=1e-3"])
    run = os.path.join(out, f"{os.path.basename(tiny_llama)}lora_{method}_dataset_id_order")
    first = torch.load(os.path.join(run, "0-weather", "adapter_model.bin"))
    second = torch.load(os.path.join(run, "1-sport", "adapter_model.bin"))
    if method == "OLoRA":
        assert json.load(open(os.path.join(run, "1-sport", "adapter_config.json")))["r"] == 16
        for k, v in first.items():
            assert torch.equal(second[k][:8] if "lora_A" in k else second[k][:, :8], v)
    else:
        state = torch.load(os.path.join(run, "1-sport", "ewc_state.pt"), weights_only=False)
        assert len(state["fisher"]) == len(first) and any(not torch.equal(first[k], second[k]) for k in first)


def test_outer_lr_zero_reproduces_the_released_llama_outer_learner(tiny_llama, bench_dir, tmp_path):
    """--outer_optimizer separate --outer_lr 0: the outer loop measures importance and moves no weight
    (delta_out = 0 at every fusion), as the released fp16 LLaMA recipe's outer optimizer at lr 0 did."""
    out = str(tmp_path / "out")
    for t in (0, 1):
        llama_main([f"--base_model={tiny_llama}", f"--data_dir={bench_dir}",
                    f"--dataset_id={os.path.join(bench_dir, 'order.json')}", f"--task_id={t}", f"--output_path={out}",
                    "--num_epochs=1", "--batch_size=4", "--micro_batch_size=2", "--train_batch_size_outer=4",
                    "--inner_iterations=2", "--outer_iterations=2", "--memory_data_ratio=25", "--val_set_size=0",
                    "--logging_steps=100", "--warmup_steps=0", "--outer_optimizer=separate", "--outer_lr=0"])
    info = json.load(open(os.path.join(out, f"{os.path.basename(tiny_llama)}lora_RKIF_dataset_id_order", "1-sport",
                                       "run_info.json")))
    history = info["kif"]["fusion_history"]
    assert len(history) == info["global_steps"] // 2 > 0
    assert all(h["delta_out_norm"] == 0.0 and h["delta_in_norm"] > 0 for h in history)


def test_llama_defaults_to_gradient_checkpointing_and_chunked_outer_batches_match(tiny_llama, bench_dir, tmp_path):
    """Chunks of a causal LM's memory batch are weighted by their label tokens after the one-token
    shift, so the chunked outer gradient is the whole batch's (no dropout, so that both draw alike)."""
    common = [f"--base_model={tiny_llama}", f"--data_dir={bench_dir}",
              f"--dataset_id={os.path.join(bench_dir, 'order.json')}", "--num_epochs=1", "--batch_size=4",
              "--micro_batch_size=2", "--train_batch_size_outer=5", "--inner_iterations=2", "--outer_iterations=2",
              "--memory_data_ratio=25", "--val_set_size=0", "--logging_steps=100", "--warmup_steps=0",
              "--lora_dropout=0"]
    base = str(tmp_path / "base")
    llama_main(common + [f"--output_path={base}", "--task_id=0"])
    adapters = {}
    for chunk in (0, 2):
        out = str(tmp_path / f"chunk{chunk}")
        shutil.copytree(base, out)
        llama_main(common + [f"--output_path={out}", "--task_id=1", f"--outer_micro_batch_size={chunk}"])
        task = os.path.join(out, f"{os.path.basename(tiny_llama)}lora_RKIF_dataset_id_order", "1-sport")
        assert json.load(open(os.path.join(task, "run_info.json")))["gradient_checkpointing"] is True
        adapters[chunk] = torch.load(os.path.join(task, "adapter_model.bin"))
    for k in adapters[0]:
        torch.testing.assert_close(adapters[2][k], adapters[0][k], rtol=1e-5, atol=1e-6)
