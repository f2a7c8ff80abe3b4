"""--recipe: the O-LoRA release's protocol beside the Recurrent-KIF one, per task, recorded in run_info.json."""

import json
import os

import pytest

from conftest import TASKS, cli_args
from rkif.commands import entry_points
from rkif.run_folders import adapter_dir
from rkif.methods import get_method
from rkif.errors import InputError
from rkif.recipes import RKIF, apply_recipe, benchmark_of, recipe_values
from rkif.settings import built
from rkif.training import TRAIN
from rkif.tasks import TASK_ORDERS

main = entry_points.train_t5

# scripts/long.sh of cmnfriend/O-LoRA, task by task (our order 3): (task, lamda_1, lamda_2, num_train_epochs)
OLORA_LONG_SH = [("yelp", 0, 0, 1), ("amazon", 0.5, 0, 1), ("mnli", 0.5, 0, 2), ("cb", 0.5, 0, 1),
                 ("copa", 0.5, 0.1, 1), ("qqp", 0.5, 0.1, 1), ("rte", 0.5, 0.3, 1), ("imdb", 0.5, 0, 1),
                 ("sst-2", 0.5, 0.1, 1), ("dbpedia", 5, 0, 1), ("agnews", 5, 0, 1), ("yahoo", 5, 0.1, 1),
                 ("multirc", 5, 0, 1), ("boolqa", 5, 0.1, 1), ("wic", 5, 0.3, 1)]


def test_olora_recipe_reproduces_the_released_long_script_on_order_3():
    tasks = TASK_ORDERS[3]
    assert [t for t, *_ in OLORA_LONG_SH] == tasks
    for t, (task, lambda_1, lambda_2, epochs) in enumerate(OLORA_LONG_SH):
        v = recipe_values("olora", "t5", tasks, t, get_method("OLoRA"))
        assert (v["lambda_orth"], v["lambda_l2"], v["num_epochs"]) == (lambda_1, lambda_2, epochs), task
        assert (v["learning_rate"], v["lr_scheduler_type"], v["warmup_steps"], v["batch_size"]) == (1e-3, "constant",
                                                                                                    0, 64)
        assert (v["max_input_length"], v["max_target_length"], v["lora_dropout"], v["val_set_size"]) == (512, 50,
                                                                                                        0.1, 0)


def test_standard_orders_and_custom_orders_take_the_standard_weights_and_incLoRA_none():
    for order in (4, 5, 6):
        assert benchmark_of(TASK_ORDERS[order]) == "standard"
        for t in range(4):
            v = recipe_values("olora", "t5", TASK_ORDERS[order], t, get_method("OLoRA"))
            assert (v["lambda_orth"], v["lambda_l2"], v["num_epochs"]) == (0.5, 0.0, 1)
            v = recipe_values("olora", "t5", TASK_ORDERS[order], t, get_method("IncLoRA"))
            assert (v["lambda_orth"], v["lambda_l2"]) == (0.0, 0.0)
    assert benchmark_of(TASK_ORDERS[3][:14]) == "standard"  # 14 of the 15 Long tasks: a custom order
    assert all(benchmark_of(TASK_ORDERS[o]) == "long" for o in (1, 2, 3))


def test_explicit_flags_win_and_the_record_says_which_the_recipe_set():
    settings = built(TRAIN["t5"].groups, dict(recipe="olora", learning_rate=5e-4, task_id=1, method_name="OLoRA"))
    resolved, record = apply_recipe(settings, "t5", TASK_ORDERS[4])
    assert resolved.training.learning_rate == 5e-4 and record["overridden"] == {"learning_rate": 5e-4}
    assert resolved.training.lr_scheduler_type == "constant" and resolved.olora.lambda_orth == 0.5
    assert settings.training.lr_scheduler_type is None  # settings are never changed in place
    assert record["set"]["lr_scheduler_type"] == "constant" and "learning_rate" not in record["set"]
    assert record["name"] == "olora" and record["benchmark"] == "standard"
    resolved, record = apply_recipe(built(TRAIN["llama"].groups, {}), "llama")
    assert resolved.run.recipe == "rkif" and record["set"] == RKIF["llama"] and resolved.llama.cutoff_len == 512


def test_a_recipe_value_is_checked_like_a_flag(monkeypatch):
    """The groups check each value when they are rebuilt with the recipe's, so a bad recipe table is refused
    with the flag's own message."""
    monkeypatch.setitem(RKIF, "t5", {**RKIF["t5"], "lora_dropout": 1.5})
    with pytest.raises(InputError, match=r"--lora_dropout: must be in \[0, 1\), got 1.5"):
        apply_recipe(built(TRAIN["t5"].groups, {}), "t5")


def test_an_unknown_recipe_is_refused_by_name(tiny_t5, bench_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(cli_args(tiny_t5, bench_dir, str(tmp_path), 0, "OLoRA", recipe="o-lora"))
    assert e.value.code == 2 and "--recipe: unknown recipe 'o-lora'" in capsys.readouterr().err


def run_info(out, base, method, order, t, task):
    """run_info.json of an olora run: its folders carry _recipe-olora."""
    folder = adapter_dir(out, base, method, order, t, task, recipe="olora")
    assert folder.endswith(f"lora_{method}_dataset_id_{order}_recipe-olora/{t}-{task}")
    with open(os.path.join(folder, "run_info.json")) as f:
        return json.load(f)


def test_olora_and_incLoRA_on_a_two_task_custom_order_record_the_recipe(tiny_t5, bench_dir, tmp_path):
    out = str(tmp_path / "out")
    order = os.path.join(str(tmp_path), "two.json")
    with open(order, "w") as f:
        json.dump(TASKS[:2], f)
    for method in ("OLoRA", "IncLoRA"):
        for t in (0, 1):
            flags = cli_args(tiny_t5, bench_dir, out, t, method, recipe="olora", dataset_id=order, logging_steps=1)
            # the fixture's batch flags are explicit: only the recipe's other values apply
            main([f for f in flags if not f.startswith(("--batch_size", "--micro_batch_size", "--num_epochs",
                                                        "--warmup_steps"))] + ["--max_steps=3", "--batch_size=8"])
            info = run_info(out, tiny_t5, method, "two", t, TASKS[t])
            s, recipe = info["settings"], info["recipe"]
            expected = (0.5, 0.0) if method == "OLoRA" else (0.0, 0.0)
            assert (s["lambda_orth"], s["lambda_l2"]) == expected
            assert (recipe["set"]["lambda_orth"], recipe["set"]["lambda_l2"]) == expected
            assert recipe["name"] == "olora" and recipe["benchmark"] == "standard"
            assert recipe["overridden"] == {"batch_size": 8}
            assert (s["learning_rate"], s["lr_scheduler_type"], s["warmup_steps"], s["lora_dropout"],
                    s["val_set_size"], s["micro_batch_size"], s["max_input_length"]) == (1e-3, "constant", 0, 0.1,
                                                                                           0, 8, 512)
            assert info["num_validation_examples"] == 0 and info["best_model_checkpoint"] is None
            state = os.path.join(adapter_dir(out, tiny_t5, method, "two", t, TASKS[t], recipe="olora"), "checkpoint-3",
                                 "trainer_state.json")
            with open(state) as f:
                rates = [e["learning_rate"] for e in json.load(f)["log_history"] if "learning_rate" in e]
            assert rates == [1e-3] * 3  # constant, no warm-up


def test_an_emulated_long_order_takes_lambda_1_by_position_and_lambda_2_by_task(tiny_t5, tmp_path):
    """Order 1 (mnli first) on tiny copies of the 15 Long tasks: a schedule the release never ran,
    so it checks the rule itself (lamda_1 by position, lamda_2 and MNLI's 2 epochs by task name)."""
    from rkif.synthetic import write_synthetic_benchmark

    data = str(tmp_path / "long")
    write_synthetic_benchmark(data, ["weather"], n_train=8, n_dev=4, n_test=4, seed=0)
    for split in ("train", "dev", "test"):
        src = os.path.join(data, split, "weather_T5.json")
        for task in TASK_ORDERS[1]:
            os.link(src, os.path.join(data, split, f"{task}_T5.json"))
    out = str(tmp_path / "out")
    by_name = dict((task, (l2, epochs)) for task, _, l2, epochs in OLORA_LONG_SH)
    for t, task in enumerate(TASK_ORDERS[1]):
        main(["--base_model", tiny_t5, "--data_dir", data, "--dataset_id", "1", "--task_id", str(t), "--method_name",
              "OLoRA", "--output_path", out, "--recipe", "olora", "--max_steps", "1", "--batch_size", "8",
              "--logging_steps", "100"])
        recipe = run_info(out, tiny_t5, "OLoRA", "1", t, task)["recipe"]
        assert recipe["benchmark"] == "long"
        expected_l1 = 0.0 if t == 0 else 0.5 if t < 9 else 5.0
        assert (recipe["set"]["lambda_orth"], recipe["set"]["lambda_l2"], recipe["set"]["num_epochs"]) == (
            expected_l1, *by_name[task]), task


def test_the_tasl_recipe_trains_with_the_tasl_release_s_values(tiny_t5, bench_dir, tmp_path):
    """--recipe tasl: finetune_TasLoRA.py's values (1 epoch, lr 3e-4, alpha 16, 100 validation examples, ...) in
    folders of their own; a flag given wins."""
    out = str(tmp_path / "out")
    main(cli_args(tiny_t5, bench_dir, out, 0, "TaSL", recipe="tasl", max_input_length=64))
    folder = adapter_dir(out, tiny_t5, "TaSL", "order", 0, TASKS[0], recipe="tasl")
    info = json.load(open(os.path.join(folder, "run_info.json")))
    s, recipe = info["settings"], info["recipe"]
    assert recipe["name"] == "tasl" and recipe["overridden"] == {"num_epochs": 2, "batch_size": 4,
                                                                 "micro_batch_size": 2, "warmup_steps": 1,
                                                                 "max_input_length": 64}
    assert (s["learning_rate"], s["lora_alpha"], s["lora_r"], s["lora_dropout"], s["max_target_length"]) == (
        3e-4, 16, 8, 0.05, 128)
    assert s["val_set_size"] == 100 and info["num_validation_examples"] > 0 and s["tasl_temperature"] == 0.25
    assert json.load(open(os.path.join(folder, "adapter_config.json")))["lora_alpha"] == 16
