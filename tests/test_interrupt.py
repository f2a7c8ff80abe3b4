"""Interrupted training, with real processes and real signals: the grid resumes by itself and ends
bitwise where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--num_epochs", "6", "--batch_size", "4", "--micro_batch_size", "2", "--eval_steps", "3",
         "--warmup_steps", "1", "--inner_iterations", "2", "--outer_iterations", "2", "--train_batch_size_outer", "4",
         "--memory_data_ratio", "25", "--val_set_size", "0", "--logging_steps", "100"]
TASKS = ["weather", "sport"]


@pytest.fixture(scope="module")
def setup(tiny_t5, bench_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    order = str(root / "pair.json")
    with open(order, "w") as f:
        json.dump(TASKS, f)
    env = {**os.environ, "BASE_MODEL": tiny_t5, "GPU": "cpu", "DATA_DIR": bench_dir, "DATASET_IDS": order,
           "PYTHON": sys.executable}
    reference = str(root / "reference")
    p = grid(env, reference)
    assert p.wait(timeout=600) == 0
    return root, env, reference


def grid(env, out, **extra):
    return subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "run_train_KIF_t5lora.sh"), *FLAGS],
                            env={**env, "OUTPUT_PATH": out, **extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def task_dir(out, env, t):
    return os.path.join(out, f"{os.path.basename(env['BASE_MODEL'])}lora_RKIF_dataset_id_pair", f"{t}-{TASKS[t]}")


def wait_for(path, proc, timeout=300):
    start = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, f"finished before {path} appeared: {proc.communicate()[1][-2000:]}"
        assert time.time() - start < timeout
        time.sleep(0.01)


def kill_grid_after(env, out, task, step):
    """Run the grid, SIGKILL its whole process group once task's checkpoint-{step} is complete; its stdout."""
    p = grid(env, out)
    wait_for(os.path.join(task_dir(out, env, task), f"checkpoint-{step}", "checkpoint_complete.json"), p)
    os.killpg(p.pid, signal.SIGKILL)
    return p.communicate()[0]


def assert_same_adapters(out, reference, env):
    for t in range(2):
        a = torch.load(os.path.join(task_dir(out, env, t), "adapter_model.bin"))
        b = torch.load(os.path.join(task_dir(reference, env, t), "adapter_model.bin"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), t


def test_sigkill_three_times_then_the_grid_resumes_to_the_same_adapters(setup):
    root, env, reference = setup
    out = str(root / "killed")
    # 1: killed in task 0 once its first checkpoint is complete
    kill_grid_after(env, out, 0, 3)
    assert not os.path.exists(os.path.join(task_dir(out, env, 0), "adapter_model.bin"))
    # 2: rerun, no flags: task 0 resumes; killed in task 1 after its first checkpoint
    assert "resuming task 0-weather from" in kill_grid_after(env, out, 1, 6)
    # 3: rerun, killed again later in task 1; then its newest checkpoint is left as a kill during the
    # save leaves it: without the KIF state and the completion marker
    kill_grid_after(env, out, 1, 15)
    assert not os.path.exists(os.path.join(task_dir(out, env, 1), "adapter_model.bin"))
    newest = sorted((d for d in os.listdir(task_dir(out, env, 1)) if d.startswith("checkpoint-")),
                    key=lambda d: int(d.split("-")[-1]))[-1]
    for name in ("kif_state_0.pt", "checkpoint_complete.json"):
        os.remove(os.path.join(task_dir(out, env, 1), newest, name))
    p = grid(env, out)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    assert f"warning: skipping the incomplete {os.path.join(task_dir(out, env, 1), newest)}" in stderr
    assert "skip: order" in stdout and "resuming task 1-sport from" in stdout
    assert_same_adapters(out, reference, env)


def test_sigterm_saves_a_checkpoint_and_the_resumed_task_ends_the_same(setup):
    root, env, reference = setup
    out = str(root / "terminated")
    p = grid(env, out)
    wait_for(os.path.join(task_dir(out, env, 0), "checkpoint-3", "checkpoint_complete.json"), p)
    # the training process itself, as a cluster's scheduler signals it
    child = subprocess.run(["pgrep", "-P", str(p.pid), "-f", "run_pipeline.py"], capture_output=True,
                           text=True).stdout.split()
    os.kill(int(child[0]), signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 143, stderr[-2000:]
    line = [x for x in stderr.splitlines() if x.startswith("interrupted by SIGTERM at step ")]
    assert len(line) == 1 and "to resume, run the same command with --resume_from_checkpoint" in line[0]
    step = int(line[0].split("at step ")[1].split()[0])
    checkpoint = os.path.join(task_dir(out, env, 0), f"checkpoint-{step}")
    assert os.path.isfile(os.path.join(checkpoint, "checkpoint_complete.json"))
    assert not os.path.exists(os.path.join(task_dir(out, env, 0), "adapter_model.bin"))
    p = grid(env, out)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    assert f"resuming task 0-weather from {checkpoint} (step {step})" in stdout
    assert_same_adapters(out, reference, env)


def test_naming_an_incomplete_checkpoint_is_an_error_and_restart_is_asked_for(setup):
    root, env, reference = setup
    out = str(root / "named")
    kill_grid_after(env, out, 0, 6)
    folder = task_dir(out, env, 0)
    checkpoint = os.path.join(folder, "checkpoint-6")
    os.remove(os.path.join(checkpoint, "trainer_state.json"))
    before = {d: sorted(os.listdir(os.path.join(folder, d))) for d in os.listdir(folder) if d.startswith("checkpoint-")}
    q = subprocess.run([sys.executable, os.path.join(ROOT, "src", "finetune_KIF_t5lora.py"),
                        "--base_model", env["BASE_MODEL"], "--data_dir", env["DATA_DIR"], "--dataset_id",
                        env["DATASET_IDS"], "--task_id", "0", "--output_path", out, *FLAGS,
                        "--resume_from_checkpoint", checkpoint], capture_output=True, text=True, timeout=300)
    assert q.returncode == 2 and "Traceback" not in q.stderr
    assert (f"error: --resume_from_checkpoint: {checkpoint} is incomplete (trainer_state.json is missing)"
            in q.stderr)
    assert {d: sorted(os.listdir(os.path.join(folder, d))) for d in os.listdir(folder)
            if d.startswith("checkpoint-")} == before
    # RESUME=0 restarts the task at step 0, dropping the old checkpoints, and still ends the same
    p = grid(env, out, RESUME="0")
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    assert "at step 0: removing" in stdout and "resuming" not in stdout
    assert_same_adapters(out, reference, env)
