"""The methods' seam: a method is one object in the registry, nothing outside rkif/methods/ asks which
method it is, and a new method plugs in without touching the core (its extra loss sees the batch and
the model's outputs)."""

import ast
import os

import torch

from conftest import TASKS, cli_args
from rkif.commands import entry_points
from rkif.methods import METHOD_NAMES, METHODS, Method, get_method, prediction_kinds
from rkif.run_folders import adapter_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names_tested(source, names):
    """(line, name) wherever a method's name is compared with (==, !=, in), or used as a key to look up (x[...],
    .get(...), .pop(...)): the ways code branches on which method it runs."""
    found = []

    def literals(node):
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [n.value for n in items if isinstance(n, ast.Constant) and n.value in names]

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                found += [(node.lineno, n) for n in literals(side)]
        elif isinstance(node, ast.Subscript):
            found += [(node.lineno, n) for n in literals(node.slice)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop")
              and node.args):
            found += [(node.lineno, n) for n in literals(node.args[0])]
    return found


def test_the_finder_sees_each_way_of_branching_on_a_name():
    source = ('if method == "RKIF":\n    pass\n'
              'ok = m in ("EWC", "MTL") or table["OLoRA"] or low.get("Replay")\n'
              'defaults = {"methods": "RKIF,SeqLoRA"}; name = "SeqLoRA"\n')
    assert names_tested(source, set(METHOD_NAMES)) == [(1, "RKIF"), (3, "EWC"), (3, "MTL"), (3, "OLoRA"), (3, "Replay")]


def test_no_module_outside_methods_names_a_method_or_tests_its_kind():
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "src")):
        if os.path.join("rkif", "methods") in folder or "egg-info" in folder:
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found += [f"{os.path.relpath(path, ROOT)}:{line} {n}"
                          for line, n in names_tested(open(path).read(), set(METHOD_NAMES))]
    assert found == []
    # the questions the core asks are the seam's; a method has no kind flags to test
    assert not any(hasattr(Method, flag) for flag in ("sequential", "branches", "ewc", "memory"))


def test_the_registry_answers_what_the_core_asks():
    assert METHOD_NAMES == ("RKIF", "SeqLoRA", "Replay", "OLoRA", "IncLoRA", "EWC", "LwF", "TaSL", "MTL")
    assert [m for m in METHOD_NAMES if get_method(m).state_files] == ["EWC", "TaSL"]
    assert get_method("MTL").trained_task_ids(3) == [2] and get_method("EWC").trained_task_ids(3) == [0, 1, 2]
    assert prediction_kinds(get_method("MTL"), matrix=True) == ("avgPerf",)
    assert prediction_kinds(get_method("RKIF"), matrix=False) == ("avgPerf", "bwt")
    assert [m for m in METHOD_NAMES if get_method(m).uses_memory] == ["RKIF", "Replay"]
    count = {"a": 10, "b": 20, "c": 40}.get
    assert get_method("Replay").training_examples(2, ["a", "b", "c"], count, 25) == 40 + 2 + 5
    assert get_method("MTL").training_examples(2, ["a", "b", "c"], count, 25) == 70
    olora_values = {"lambda_orth": 0.5, "lambda_l2": 0.1, "lr": 1}
    assert get_method("IncLoRA").recipe_values("olora", olora_values) == {"lambda_orth": 0.0, "lambda_l2": 0.0, "lr": 1}
    assert get_method("IncLoRA").recipe_values("rkif", olora_values) == olora_values  # its penalty ignores orth
    assert get_method("OLoRA").recipe_values("olora", olora_values) == olora_values


class LogitPenalty(Method):
    """A method written for this test alone: SeqLoRA plus a term on the model's outputs (as a distillation
    would be), registered without a line of the core changed."""
    name = "LogitPenalty"
    calls = []

    def build(self, base, plan, lora, settings):
        model, _ = super().build(base, plan, lora, settings)

        def extra_loss(model, inputs, outputs):
            self.calls.append((inputs["labels"].shape, tuple(outputs.logits.shape)))
            return 1e-3 * outputs.logits.float().pow(2).mean()

        return model, extra_loss


def test_a_new_method_plugs_in_and_its_extra_loss_sees_the_batch_and_the_outputs(tiny_t5, bench_dir, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setitem(METHODS, LogitPenalty.name, LogitPenalty())
    out = str(tmp_path / "out")
    for task_id in (0, 1):
        entry_points.train_t5(cli_args(tiny_t5, bench_dir, out, task_id, LogitPenalty.name, val_set_size=0))
    calls = LogitPenalty.calls
    assert calls, "the extra loss was never called"
    for labels, logits in calls:  # the batch's labels and the logits over them
        assert logits[:2] == tuple(labels) and logits[2] > 0
    first, second = (torch.load(os.path.join(adapter_dir(out, tiny_t5, LogitPenalty.name, "order", t, TASKS[t]),
                                             "adapter_model.bin")) for t in (0, 1))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # task 1 trained on from task 0's adapter
