"""Bad input: a clear message naming what is wrong, exit status 2, and nothing written."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import cli_args
from finetune_KIF_t5lora import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def data(bench_dir, tmp_path):
    d = str(tmp_path / "data")
    shutil.copytree(bench_dir, d)
    return d


def run_cli(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


CASES = {
    "unknown dataset_id": (lambda d: None, {"dataset_id": 9}, "--dataset_id: unknown order 9"),
    "task_id out of range": (lambda d: None, {"task_id": 3}, "--task_id: 3 is out of range; this order has tasks 0..2"),
    "unknown task": (lambda d: write(os.path.join(d, "order.json"), '["nosuchtask", "weather"]'), {"task_id": 0},
                     "nosuchtask_T5.json: data file not found"),
    "missing data file": (lambda d: os.remove(os.path.join(d, "dev", "weather_T5.json")), {},
                          "dev/weather_T5.json: data file not found"),
    "malformed JSON": (lambda d: write(os.path.join(d, "train", "weather_T5.json"), '[{"input": "a",'), {},
                       "train/weather_T5.json: malformed JSON"),
    "record without output": (lambda d: write(os.path.join(d, "train", "weather_T5.json"),
                                              '[{"id": "w_0", "input": "a"}]'), {},
                              "train/weather_T5.json: record 0 (id w_0) has no 'output' field"),
    "record without input": (lambda d: write(os.path.join(d, "train", "weather_T5.json"), '[{"output": "a"}]'), {},
                             "has no 'input' field"),
    "empty task file": (lambda d: write(os.path.join(d, "train", "weather_T5.json"), "[]"), {},
                        "train/weather_T5.json: the task file holds no records"),
    "missing previous adapter": (lambda d: None, {"task_id": 1},
                                 "the adapter of task 0 (weather) is missing"),
    "unknown method": (lambda d: None, {"method_name": "EWC"}, "--method_name: unknown method 'EWC'"),
    "batch not a multiple": (lambda d: None, {"batch_size": 5}, "--batch_size 5 must be a positive multiple"),
    "bad quantile": (lambda d: None, {"quantile": 1.5}, "--quantile must be in [0, 1]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_message_and_writes_nothing(case, data, tiny_t5, tmp_path, capsys):
    corrupt, flags, message = CASES[case]
    corrupt(data)
    out = str(tmp_path / "out")
    flags = dict(flags)
    code, err = run_cli(capsys, cli_args(tiny_t5, data, out, flags.pop("task_id", 0), **flags))
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert not os.path.exists(out)


def test_empty_memory_buffer_is_refused_before_writing(data, tiny_t5, tmp_path, capsys):
    out = str(tmp_path / "out")
    main(cli_args(tiny_t5, data, out, 0))
    capsys.readouterr()
    before = sorted(os.walk(out))
    code, err = run_cli(capsys, cli_args(tiny_t5, data, out, 1, memory_data_ratio=0))
    assert code == 2
    assert "--memory_data_ratio 0: the memory buffer of tasks ['weather'] is empty" in err
    assert sorted(os.walk(out)) == before


def test_real_process_exit_status_and_stderr(bench_dir, tiny_t5, tmp_path):
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "src", "finetune_KIF_t5lora.py"),
                           *cli_args(tiny_t5, bench_dir, out, 7)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: --task_id: 7 is out of range" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(out)
