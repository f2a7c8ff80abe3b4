"""Folders written by the released generate scripts, scored by the released eval commands as typed.

The fixtures are written line for line as the released generators write them
(`id + "|||" + gold + "|||" + str([answer])`, test-split order, `{i}-{task}_result.txt`), and the
expected figures come from a re-statement of the released eval rule written here.
"""

import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER4 = ["dbpedia", "amazon", "yahoo", "agnews"]
LABELS = {"dbpedia": ["Company", "Artist", "Album"], "amazon": ["very negative", "neutral", "very positive"],
          "yahoo": ["Sports", "Health", "Music"], "agnews": ["World", "Sports", "Business"]}


def released_accuracy(result_file, test_file):
    """The released eval's rule: lower-case the line, last field is the prediction list, '</s>' removed,
    exact match against the lower-cased gold of the test file; ids must follow the test split."""
    lines = open(result_file).readlines()
    tests = json.load(open(test_file))
    hits = 0
    for i, test in enumerate(tests):
        line = lines[i].strip().lower()
        pred = ast.literal_eval(line.split("|||")[-1])[0].replace("</s>", "")
        assert line.split("|||")[0] == test["id"].lower()
        hits += pred == test["output"].lower()
    return hits / len(tests)


def write_test_split(data_dir, task, n=6):
    records = [{"id": f"{task}_{k}", "input": f"Topic? Option: {', '.join(LABELS[task])}.\nText {k}\nAnswer:",
                "output": LABELS[task][k % 3]} for k in range(n)]
    os.makedirs(os.path.join(data_dir, "test"), exist_ok=True)
    for suffix in ("_T5", ""):
        with open(os.path.join(data_dir, "test", f"{task}{suffix}.json"), "w") as f:
            json.dump(records, f)
    return records


def answer(style, gold, k, quality):
    """What a released generator would have written for example k: right or wrong, T5 or LLaMA style."""
    text = gold if (k + quality) % 4 else "something else"
    if style == "llama":  # answers after "### Response:", stripped, possibly still ending in </s>
        text = text.upper() if k % 3 == 0 else text
        text = text + "</s>" if k % 2 else text
    return text


def write_released_folder(folder, data_dir, style, quality, reverse_task=None):
    os.makedirs(folder, exist_ok=True)
    for i, task in enumerate(ORDER4):
        tests = json.load(open(os.path.join(data_dir, "test", f"{task}_T5.json")))
        if task == reverse_task:
            tests = tests[::-1]
        with open(os.path.join(folder, f"{i}-{task}_result.txt"), "w", encoding="utf-8") as f:
            for k, sample in enumerate(tests):
                f.write(sample["id"] + "|||" + sample["output"] + "|||" + str([answer(style, sample["output"], k,
                                                                                      quality + i)]))
                f.write("\n")


@pytest.fixture
def released_workdir(tmp_path):
    """A folder laid out as the original repository's: output/{model}_{method}_dataset_id_4_{kind}/."""
    data = tmp_path / "data" / "long_sequence"
    for task in ORDER4:
        write_test_split(str(data), task)
    return tmp_path


def run_script(cwd, script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "src", script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("style,model", [("t5", "t5-largelora"), ("llama", "Llama-2-7b-chat-hflora")])
def test_released_commands_on_released_folders(released_workdir, style, model):
    wd = str(released_workdir)
    data = os.path.join(wd, "data", "long_sequence")
    final = os.path.join(wd, "output", f"{model}_RKIF_dataset_id_4_avgPerf")
    after = os.path.join(wd, "output", f"{model}_RKIF_dataset_id_4_bwt")
    write_released_folder(final, data, style, quality=1)
    write_released_folder(after, data, style, quality=2)
    final_acc = [released_accuracy(os.path.join(final, f"{i}-{t}_result.txt"), os.path.join(data, "test", f"{t}.json"))
                 for i, t in enumerate(ORDER4)]
    after_acc = [released_accuracy(os.path.join(after, f"{i}-{t}_result.txt"), os.path.join(data, "test",
                                                                                          f"{t}_T5.json"))
                 for i, t in enumerate(ORDER4)]
    op = sum(final_acc) / 4
    bwt = sum(final_acc[i] - after_acc[i] for i in range(3)) / 3
    assert 0 < op < 1 and bwt != 0  # the fixture mixes right, wrong, upper-case and </s> answers

    p = run_script(wd, "eval_avgPerf.py", "--dataset_id", "4", "--model_name", model, "--method_name", "RKIF")
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.load(open(os.path.join(final, "metrics.json")))
    assert summary["OP"] == pytest.approx(op, abs=1e-12)
    assert [r["score"] for r in summary["tasks"]] == pytest.approx(final_acc, abs=1e-12)

    p = run_script(wd, "eval_bwt.py", "--dataset_id", "4", "--test_data_name", os.path.basename(after),
                   "--test_data_name2", os.path.basename(final))
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.load(open(os.path.join(after, "metrics.json")))["BWT"] == pytest.approx(bwt, abs=1e-12)
    # --model_name names both folders too; our own flags (--pred_dir / --avgperf_dir) read them as well
    for args in (["--model_name", model], ["--pred_dir", after, "--avgperf_dir", final]):
        os.remove(os.path.join(after, "metrics.json"))
        p = run_script(wd, "eval_bwt.py", "--dataset_id", "4", *args)
        assert p.returncode == 0, p.stderr[-2000:]
        assert json.load(open(os.path.join(after, "metrics.json")))["BWT"] == pytest.approx(bwt, abs=1e-12)


def test_released_rule_kept_where_whitespace_differs(released_workdir):
    """'positive </s>' is wrong for the released rule (no strip); ours says so in a warning."""
    wd = str(released_workdir)
    data = os.path.join(wd, "data", "long_sequence")
    final = os.path.join(wd, "output", "m_RKIF_dataset_id_4_avgPerf")
    write_released_folder(final, data, "t5", quality=1)
    tests = json.load(open(os.path.join(data, "test", "dbpedia.json")))
    with open(os.path.join(final, "0-dbpedia_result.txt"), "w") as f:
        for k, s in enumerate(tests):
            f.write(s["id"] + "|||" + s["output"] + "|||" + str([s["output"] + (" </s>" if k < 2 else "</s>")]) + "\n")
    p = run_script(wd, "eval_avgPerf.py", "--dataset_id", "4", "--model_name", "m")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.load(open(os.path.join(final, "metrics.json")))["tasks"]
    assert rows[0]["score"] == pytest.approx(4 / 6)
    assert "0-dbpedia_result.txt: 2 predictions match the gold only after stripping whitespace" in p.stderr


def test_released_file_out_of_order_is_an_error(released_workdir):
    wd = str(released_workdir)
    data = os.path.join(wd, "data", "long_sequence")
    final = os.path.join(wd, "output", "t5-largelora_RKIF_dataset_id_4_avgPerf")
    write_released_folder(final, data, "t5", quality=1, reverse_task="yahoo")
    p = run_script(wd, "eval_avgPerf.py", "--dataset_id", "4", "--model_name", "t5-largelora")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert ("2-yahoo_result.txt: prediction 1 has id 'yahoo_5' where the test split has 'yahoo_0'; released-format "
            "files follow the test split's order") in p.stderr
    assert not os.path.exists(os.path.join(final, "metrics.json"))
    p = run_script(wd, "eval_avgPerf.py", "--dataset_id", "4", "--model_name", "nosuchmodel")
    assert p.returncode == 2 and "0-dbpedia.jsonl: prediction file not found (looked for 0-dbpedia.jsonl or " \
                                 "0-dbpedia_result.txt or 0-dbpedia.txt)" in p.stderr
