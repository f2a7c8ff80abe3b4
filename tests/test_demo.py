"""src/demo.py's set-up: one folder per seed, a folder made with other settings refused, the learning check."""

import json
import os

import pytest

from rkif.compat import STACK
from rkif.demo import learning_check, prepare
from rkif.errors import InputError


def test_prepare_records_its_settings_and_refuses_a_folder_made_with_others(tmp_path):
    out = str(tmp_path / "demo")
    small = dict(tasks=("weather", "sport"), n_train=4, n_dev=2, n_test=2, d_model=16)
    data, order, model = prepare(out, seed=3, **small)
    assert json.load(open(os.path.join(out, "demo_settings.json"))) == dict(
        tasks=["weather", "sport"], n_train=4, n_dev=2, n_test=2, d_model=16, seed=3, stack=STACK)
    assert json.load(open(order)) == ["weather", "sport"] and os.path.isfile(os.path.join(model, "config.json"))
    stamp = os.path.getmtime(os.path.join(model, "config.json"))
    assert prepare(out, seed=3, **small) == (data, order, model)  # made once
    assert os.path.getmtime(os.path.join(model, "config.json")) == stamp
    with pytest.raises(InputError, match=r"demo_settings.json: .* was made with other settings \(seed 3\)"):
        prepare(out, seed=4, **small)
    # a folder of the other stack (or of before there were two, which was the pinned stack's) is refused too
    record = json.load(open(os.path.join(out, "demo_settings.json")))
    other = "current" if STACK == "pinned" else "pinned"
    json.dump({**record, "stack": other} if other == "current" else {k: v for k, v in record.items() if k != "stack"},
              open(os.path.join(out, "demo_settings.json"), "w"))
    with pytest.raises(InputError, match=rf"other settings \(stack {other}\)"):
        prepare(out, seed=3, **small)


def test_learning_check_lists_each_sequential_method_s_tasks_below_the_threshold():
    summary = {"RKIF": {"R": [[0.9], [0.5, 0.85], [0.1, 0.2, 0.79]]}, "SeqLoRA": {"R": [[0.8]]}, "MTL": {"OP": 0.9}}
    assert learning_check(summary) == {"RKIF": [0.79], "SeqLoRA": []}
    assert learning_check(summary, threshold=0.7) == {"RKIF": [], "SeqLoRA": []}
