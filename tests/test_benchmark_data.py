"""Raw benchmark conversion, folder validation, and custom benchmarks (with a ROUGE-L task)."""

import json
import os
import random
import shutil

import pytest
from rouge_score import rouge_scorer

from rkif.benchmark import convert_task, preprocess
from rkif.task_plan import plan_task
from rkif.errors import InputError
from rkif.tasks import resolve_order, task_metrics
from rkif.validate import summary_lines, validate_folder
from rkif.pipeline import run_order

YELP_LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def raw_layout_a(root, name="Yelp", sizes=(1200, 600, 50)):
    d = os.path.join(root, name)
    for split, n in zip(("train", "dev", "test"), sizes):
        write(os.path.join(d, f"{split}.json"),
              [{"sentence": f"Text: {split} review {i}\n", "label": YELP_LABELS[i % 5]} for i in range(n)])
    write(os.path.join(d, "labels.json"), YELP_LABELS)
    return d


def test_layout_a_wording_caps_ids_and_seeded_shuffle(tmp_path):
    raw = str(tmp_path / "raw")
    raw_layout_a(raw)
    counts = preprocess(raw, str(tmp_path / "out"))
    assert counts == {"yelp": {"train": 1000, "dev": 500, "test": 50}}
    t5 = json.load(open(tmp_path / "out" / "train" / "yelp_T5.json"))
    llama = json.load(open(tmp_path / "out" / "train" / "yelp.json"))
    order = list(range(1200))
    random.Random(42).shuffle(order)
    first = order[0]
    instruction = ("What is the sentiment of the following paragraph? Choose one from the option. "
                   "Option: very negative, negative, neutral, positive, very positive.\n")
    assert t5[0] == {"id": "Yelp_0", "input": instruction + f"Text: train review {first}\n\nAnswer:",
                     "output": YELP_LABELS[first % 5]}
    assert llama[0] == {"id": "Yelp_0", "instruction": instruction, "input": f"Text: train review {first}\n\nAnswer:",
                        "output": YELP_LABELS[first % 5]}
    assert [r["id"] for r in t5] == [f"Yelp_{n}" for n in range(1000)]
    assert {r["input"] for r in t5} == {instruction + f"Text: train review {i}\n\nAnswer:" for i in order[:1000]}
    again = convert_task(os.path.join(raw, "Yelp"), "Yelp", "SC")
    other = convert_task(os.path.join(raw, "Yelp"), "Yelp", "SC", seed=7)
    assert again["train"][0] == t5 and other["train"][0] != t5


def test_layout_b_instances_type_from_parent_folder_and_label_order(tmp_path):
    raw = tmp_path / "raw"
    for split in ("train", "dev", "test"):
        write(str(raw / "NLI" / "MyNLI" / f"{split}.json"), {"Definition": ["..."], "Instances": [
            {"input": f"sentence 1: a{i}\nsentence 2: b{i}", "output": ["neutral", "entailment"][i % 2]}
            for i in range(6)]})
    preprocess(str(raw), str(tmp_path / "out"))
    rec = json.load(open(tmp_path / "out" / "test" / "mynli.json"))[0]
    assert rec["instruction"] == ('What is the logical relationship between the "sentence 1" and the "sentence 2"? '
                                  "Choose one from the option. Option: neutral, entailment.\n")
    assert rec["input"].endswith("\nAnswer:") and rec["id"] == "MyNLI_0"


def test_unknown_type_needs_types_and_bad_raw_input(tmp_path):
    raw = str(tmp_path / "raw")
    raw_layout_a(raw, "Mystery", (5, 5, 5))
    with pytest.raises(InputError, match="no task type known for 'Mystery'"):
        preprocess(raw, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    assert preprocess(raw, str(tmp_path / "out"), types={"Mystery": "TC"})["mystery"]["train"] == 5
    os.remove(os.path.join(raw, "Mystery", "labels.json"))
    with pytest.raises(InputError, match="labels.json: required"):
        preprocess(raw, str(tmp_path / "out2"), types={"mystery": "TC"})


def test_validate_clean_folder_and_summary(tmp_path, bench_dir):
    records = validate_folder(bench_dir)
    lines = "\n".join(summary_lines(records))
    assert "weather" in lines and "24       8       8  llama+t5" in lines
    assert "label distribution (train):" in lines


def corrupt(data, task, split, fn, kind=""):
    path = os.path.join(data, split, f"{task}{kind}.json")
    recs = json.load(open(path))
    fn(recs)
    json.dump(recs, open(path, "w"))


@pytest.mark.parametrize("damage, message", [
    (lambda d: open(os.path.join(d, "dev", "sport_T5.json"), "w").write("[{"), "schema problems"),
    (lambda d: corrupt(d, "sport", "train", lambda r: r[0].pop("id"), "_T5"), "schema problems"),
    (lambda d: corrupt(d, "food", "test", lambda r: r[1].update(id=r[0]["id"])), "duplicate ids"),
    (lambda d: corrupt(d, "weather", "train", lambda r: r[2].update(output="  "), "_T5"), "empty outputs"),
    (lambda d: corrupt(d, "weather", "dev", lambda r: r[0].update(output="hail"), "_T5"),
     "outputs outside the option list"),
    (lambda d: corrupt(d, "sport", "test", lambda r: r[0].update(input="changed")), "T5/LLaMA pair mismatches"),
    (lambda d: corrupt(d, "sport", "test", lambda r: r.pop()), "T5/LLaMA pair mismatches"),
])
def test_validate_reports_the_first_class_of_problem(bench_dir, tmp_path, damage, message):
    data = str(tmp_path / "data")
    shutil.copytree(bench_dir, data)
    damage(data)
    with pytest.raises(InputError, match=message) as e:
        validate_folder(data)
    assert data in str(e.value)


def test_training_runs_the_same_checks(bench_dir, tmp_path, capsys):
    data = str(tmp_path / "data")
    shutil.copytree(bench_dir, data)
    plan = dict(method_name="RKIF", dataset_id=os.path.join(data, "order.json"), task_id=0, data_dir=data,
                output_path=str(tmp_path / "o"), base_model="m", memory_data_ratio=2, val_set_size=25, seed=42)
    # an output outside the options is reported but not refused: the released MNLI dev split has six ("-")
    corrupt(data, "weather", "dev", lambda r: r[3].update(output="-"), "_T5")
    assert len(plan_task(**plan).validation) == 8
    assert "warning: " in capsys.readouterr().err
    corrupt(data, "weather", "train", lambda r: r[1].update(id=r[0]["id"]), "_T5")
    with pytest.raises(InputError, match="train/weather_T5.json: 1 duplicate ids, e.g. \\['weather_0'\\]"):
        plan_task(**plan)
    corrupt(data, "weather", "train", lambda r: [r[1].update(id="weather_1"), r[2].update(output=" ")], "_T5")
    with pytest.raises(InputError, match="1 records with an empty output"):
        plan_task(**plan)


def test_custom_description_orders_and_metric_errors(tmp_path):
    p = tmp_path / "bench.json"
    p.write_text(json.dumps({"orders": {"a": ["x", "y"], "b": ["y", "x"]}, "metrics": {"y": "rougeL"}}))
    assert resolve_order(f"{p}#b") == ("bench_b", ["y", "x"])
    assert task_metrics(f"{p}#a") == {"x": "accuracy", "y": "rougeL"}
    with pytest.raises(InputError, match="several orders"):
        resolve_order(str(p))
    with pytest.raises(InputError, match="no order 'c'"):
        resolve_order(f"{p}#c")
    for spec, message in (({"tasks": ["x"], "metrics": {"x": "bleu"}}, "metric 'bleu'"),
                          ({"tasks": ["x"], "metrics": {"z": "rougeL"}}, "'z', which is in no order")):
        p.write_text(json.dumps(spec))
        with pytest.raises(InputError, match=message):
            resolve_order(str(p))


def free_text_task(data, name, n_train, n_test):
    rng = random.Random(3)
    words = "red green blue cat dog bird tree river stone cloud".split()
    for split, n in (("train", n_train), ("dev", 8), ("test", n_test)):
        t5, llama = [], []
        for i in range(n):
            picked = rng.sample(words, 3)
            instr = "Repeat the words of the following text.\n"
            body = f"Text: {' '.join(picked)}\n\nAnswer:"
            t5.append({"id": f"{name}_{i}", "input": instr + body, "output": " ".join(picked)})
            llama.append({"id": f"{name}_{i}", "instruction": instr, "input": body, "output": " ".join(picked)})
        write(os.path.join(data, split, f"{name}_T5.json"), t5)
        write(os.path.join(data, split, f"{name}.json"), llama)


def test_custom_benchmark_with_a_rougel_task_end_to_end(tiny_t5, bench_dir, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(bench_dir, data)
    free_text_task(data, "echo", 24, 8)
    desc = tmp_path / "mybench.json"
    desc.write_text(json.dumps({"tasks": ["echo", "weather"], "metrics": {"echo": "rougeL"}}))
    validate_folder(data, task_metrics(str(desc)))
    out = str(tmp_path / "out")
    summary = run_order(base_model=tiny_t5, dataset_id=str(desc), methods="RKIF", data_dir=data, output_path=out,
                        num_epochs=2, eval_steps=3, warmup_steps=1, batch_size=4, micro_batch_size=2,
                        inner_iterations=2, outer_iterations=2, train_batch_size_outer=4, memory_data_ratio=25,
                        logging_steps=100, max_input_length=128, max_length=12, gen_batch_size=4)
    run = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_mybench")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    echo = [json.loads(line) for line in open(run + "_avgPerf/0-echo.jsonl")]
    weather = [json.loads(line) for line in open(run + "_avgPerf/1-weather.jsonl")]
    rouge = sum(scorer.score(r["gold"], r["pred"])["rougeL"].fmeasure for r in echo) / len(echo)
    acc = sum(r["pred"].strip().lower() == r["gold"].lower() for r in weather) / len(weather)
    assert summary["RKIF"]["OP"] == pytest.approx((rouge + acc) / 2)
    metrics = json.load(open(run + "_avgPerf/metrics.json"))
    assert [(r["task"], r["metric"]) for r in metrics["tasks"]] == [("echo", "rougeL"), ("weather", "accuracy")]
    info = json.load(open(os.path.join(run, "1-weather", "run_info.json")))
    assert info["kif"]["memory_size"] == 6  # floor(24 * 25%), sampled uniformly from the free-text task


def test_data_scripts_exit_2_on_problems(bench_dir, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = str(tmp_path / "data")
    shutil.copytree(bench_dir, data)
    ok = subprocess.run([sys.executable, os.path.join(root, "data", "validate.py"), data], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "no problem found" in ok.stdout
    corrupt(data, "food", "train", lambda r: r[1].update(id=r[0]["id"]), "_T5")
    bad = subprocess.run([sys.executable, os.path.join(root, "data", "validate.py"), data], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "error: duplicate ids (1 files)" in bad.stderr and "food_T5.json" in bad.stderr
    raw = str(tmp_path / "raw")
    raw_layout_a(raw, "Yelp", (30, 10, 10))
    conv = subprocess.run([sys.executable, os.path.join(root, "data", "preprocess.py"), raw, str(tmp_path / "built")],
                          capture_output=True, text=True, timeout=120)
    assert conv.returncode == 0, conv.stderr
    assert "converted 1 tasks" in conv.stdout and "yelp" in conv.stdout
