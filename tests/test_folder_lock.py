"""One process per task folder and per prediction folder: a second one stops at once naming the
holder; a holder killed with SIGKILL never blocks a rerun. Real processes, real flock."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_args
from rkif.errors import InputError
from rkif.prediction_folders import run_generation
from rkif.folder_lock import LOCK_NAME, FolderBusyError, hold_folder, lock_holder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "src", "finetune_KIF_t5lora.py")
HOLD = ("import sys, time; from rkif.folder_lock import hold_folder\n"
        "with hold_folder(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)\n")


def holder(folder):
    """A separate process that holds ``folder`` until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, folder], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_holder_is_refused_with_the_holders_pid_and_host(tmp_path):
    folder = str(tmp_path / "run" / "0-task")
    p = holder(folder)
    try:
        info = lock_holder(folder)
        assert info["pid"] == p.pid and info["host"] == os.uname().nodename
        with pytest.raises(FolderBusyError, match=rf"{folder} is in use by another process \(pid {p.pid} on host "):
            with hold_folder(folder):
                pass
    finally:
        p.kill()
        p.wait()
    assert lock_holder(folder) is None  # the dead holder's lock file is left, and counts for nothing
    assert os.path.isfile(os.path.join(folder, LOCK_NAME))
    with hold_folder(folder):
        assert lock_holder(folder)["pid"] == os.getpid()


def test_a_refused_run_leaves_no_folder_behind_and_a_used_one_keeps_its_files(tmp_path):
    folder = tmp_path / "out" / "run" / "0-task"
    with hold_folder(str(folder)):
        assert folder.is_dir()
    assert not (tmp_path / "out").exists()  # created here, nothing written: removed again
    with hold_folder(str(folder)):
        (folder / "adapter_model.bin").write_bytes(b"x")
    assert sorted(os.listdir(folder)) == [LOCK_NAME, "adapter_model.bin"]


def test_only_rank_zero_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with hold_folder(str(tmp_path / "f")):
        assert not (tmp_path / "f").exists()


def test_two_trainings_of_one_task_and_a_killed_holder(tiny_t5, bench_dir, tmp_path):
    out = str(tmp_path / "out")
    args = cli_args(tiny_t5, bench_dir, out, 0, val_set_size=0, num_epochs=500)  # killed below: long enough to outlast the second start
    task = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order", "0-weather")
    first = subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT)
    start = time.time()
    while lock_holder(task) is None:
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.time() - start < 300
        time.sleep(0.05)
    second = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert first.poll() is None  # refused at once, while the first still trains
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"error: the task folder {task} is in use by another process (pid {first.pid} on host ")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert os.path.isfile(os.path.join(task, LOCK_NAME)) and lock_holder(task) is None
    rerun = subprocess.run([sys.executable, SCRIPT, *cli_args(tiny_t5, bench_dir, out, 0, val_set_size=0)],
                           capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert os.path.isfile(os.path.join(task, "adapter_model.bin"))


def test_prediction_folder_has_one_writer(tiny_t5, bench_dir, tmp_path):
    out = str(tmp_path / "out")
    pred_dir = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order_avgPerf")
    p = holder(pred_dir)
    try:
        from rkif.run_folders import adapter_dir

        for t, task in enumerate(["weather", "sport", "food"]):
            d = adapter_dir(out, tiny_t5, "RKIF", "order", t, task)
            os.makedirs(d)
            open(os.path.join(d, "adapter_model.bin"), "wb").close()
        with pytest.raises(InputError, match=rf"prediction folder {pred_dir} is in use by another process "
                                             rf"\(pid {p.pid}"):
            run_generation(kind="avgPerf", tasks=["weather", "sport", "food"], order_name="order", base_model=tiny_t5,
                           method="RKIF", output_path=out, data_dir=bench_dir, batch_size=4,
                           make_predictor=lambda adapter: pytest.fail("no model may load while the folder is held"))
    finally:
        p.kill()
        p.wait()
