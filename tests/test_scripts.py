"""scripts/run_train_KIF_t5lora.sh: required variables, skipping finished tasks, stopping at a failure."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "run_train_KIF_t5lora.sh")
FAST = ["--num_epochs=1", "--eval_steps=3", "--warmup_steps=1", "--batch_size=4", "--inner_iterations=2",
        "--outer_iterations=1", "--train_batch_size_outer=4", "--memory_data_ratio=25"]


def run(env, *args):
    full = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=full, timeout=600)


def test_unset_variables_give_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_MODEL", "GPU")}
    p = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0 and "set BASE_MODEL" in p.stderr
    p = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env={**env, "BASE_MODEL": "x"}, timeout=60)
    assert p.returncode != 0 and "set GPU" in p.stderr


def test_grid_skips_finished_tasks_and_stops_at_first_failure(tiny_t5, bench_dir, tmp_path):
    out = str(tmp_path / "out")
    env = {"BASE_MODEL": tiny_t5, "GPU": "cpu", "DATA_DIR": bench_dir, "OUTPUT_PATH": out,
           "DATASET_IDS": os.path.join(bench_dir, "order.json")}
    first = run(env, *FAST)
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order")
    assert sorted(d for d in os.listdir(run_dir) if not d.startswith(".")) == ["0-weather", "1-sport", "2-food"]
    assert first.stdout.count("train: order") == 3

    os.remove(os.path.join(run_dir, "2-food", "adapter_model.bin"))  # as if the last task was interrupted
    second = run(env, *FAST)
    assert second.returncode == 0
    assert second.stdout.count("skip: order") == 2 and "train: order" in second.stdout
    assert os.path.isfile(os.path.join(run_dir, "2-food", "adapter_model.bin"))

    third = run({**env, "OUTPUT_PATH": str(tmp_path / "other")}, *FAST, "--quantile=7")
    assert third.returncode != 0
    assert third.stdout.count("train: order") == 1  # stopped after the first failing task
    assert "--quantile must be in [0, 1]" in third.stderr
