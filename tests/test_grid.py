"""scripts/grid.py: the grid as sequences (plan, GPU-hours), a Slurm array that also runs under bash,
one node running N sequences at once, a SIGTERM mid-task and the rerun that resumes, status, report."""

import filecmp
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from rkif.run_folders import adapter_dir, run_dir
from rkif.folder_lock import hold_folder
from rkif.grid import plan_sequences, progress, sequence_hours, step_seconds_from_device_check
from rkif.synthetic import write_synthetic_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = os.path.join(ROOT, "scripts", "grid.py")
TWO = ["weather", "sport"]
FAST = ["--max_steps", "2", "--batch_size", "4", "--micro_batch_size", "4", "--val_set_size", "0",
        "--gen_batch_size", "8", "--max_length", "8", "--logging_steps", "100", "--eval_steps", "100"]


@pytest.fixture(scope="module")
def grid_bench(tmp_path_factory):
    """Two tasks (8 train, 4 test), two named orders in one custom file."""
    d = str(tmp_path_factory.mktemp("grid_bench"))
    write_synthetic_benchmark(d, TWO, n_train=8, n_dev=4, n_test=4, seed=1)
    with open(os.path.join(d, "orders.json"), "w") as f:
        json.dump({"orders": {"a": TWO, "b": TWO[::-1]}}, f)
    return d


def grid(command, tiny_t5, bench, out, *extra, methods="SeqLoRA,MTL", seeds="42,7", check=True, **kw):
    argv = [sys.executable, GRID, command, "--methods", methods, "--orders", os.path.join(bench, "orders.json"),
            "--seeds", seeds, "--base_model", tiny_t5, "--data_dir", bench, "--output_path", out, *extra]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       **kw)
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def setup_of(tiny_t5, bench, out, **flags):
    return dict(base_model=tiny_t5, data_dir=bench, output_path=out, backbone="t5", recipe="rkif", flags=flags)


def test_plan_expands_orders_and_estimates_gpu_hours_from_steps(tiny_t5, grid_bench, tmp_path):
    assert len(plan_sequences("RKIF,MTL", "standard,long", (42, 7))) == 2 * 6 * 2
    assert [s.dataset_id for s in plan_sequences("SeqLoRA", os.path.join(grid_bench, "orders.json"), "42")] == [
        os.path.join(grid_bench, "orders.json") + "#a", os.path.join(grid_bench, "orders.json") + "#b"]
    seq, mtl, replay = (plan_sequences(m, os.path.join(grid_bench, "orders.json#a"), "42")[0]
                        for m in ("SeqLoRA", "MTL", "Replay"))
    setup = setup_of(tiny_t5, grid_bench, str(tmp_path), batch_size=4, num_epochs=3, memory_data_ratio=50)
    rate = {"*": 0.5}
    # SeqLoRA: ceil(8 / 4) x 3 epochs = 6 steps per task, 2 tasks; generation: avgPerf 2 x 4 + bwt 2 x 4 examples
    assert sequence_hours(seq, setup, grid_bench, rate, 0.1, {}) * 3600 == pytest.approx(12 * 0.5 + 16 * 0.1)
    # MTL: once on the union, ceil(16 / 4) x 3 = 12 steps; avgPerf only
    assert sequence_hours(mtl, setup, grid_bench, rate, 0.1, {}) * 3600 == pytest.approx(12 * 0.5 + 8 * 0.1)
    # Replay: task 1 adds floor(8 x 50%) = 4 memory examples: ceil(12 / 4) x 3 = 9 steps
    assert sequence_hours(replay, setup, grid_bench, rate, 0.0, {}) * 3600 == pytest.approx((6 + 9) * 0.5)
    # the recipe's values where no flag is given: rkif T5 batch 8, 10 epochs -> ceil(8 / 8) x 10 per task
    assert sequence_hours(seq, setup_of(tiny_t5, grid_bench, str(tmp_path)), grid_bench, rate, 0, {}) * 3600 == \
        pytest.approx(2 * math.ceil(8 / 8) * 10 * 0.5)
    check = tmp_path / "device_check.json"
    check.write_text(json.dumps({"settings": {"layers": {"t5": 24}},
                                 "sections": {"t5_methods": {"SeqLoRA": {"seconds_per_step": 2.0}},
                                              "t5_generation": {"seconds_batched": 10.0, "examples": 100}}}))
    assert step_seconds_from_device_check(str(check), "t5", 24) == ({"SeqLoRA": 2.0}, 0.1, 1.0)
    p = grid("plan", tiny_t5, grid_bench, str(tmp_path / "out"), "--seconds_per_step", "0.5", "--out",
             str(tmp_path / "plan.tsv"), "--batch_size", "4", "--num_epochs", "3")
    lines = (tmp_path / "plan.tsv").read_text().splitlines()
    assert len(lines) == 1 + 8 and lines[0].startswith("method\torder\tdataset_id\tseed\tstate")
    assert all("\tpending\t" in line and "--num_epochs=3" in line for line in lines[1:])
    assert "estimated GPU-hours per order: orders_a" in p.stdout and "assumed: --seconds_per_step 0.5" in p.stdout
    # relative paths, as typed in another directory, reach the Slurm elements absolute
    grid("slurm", tiny_t5, os.path.relpath(grid_bench, str(tmp_path)), "rel_out", cwd=str(tmp_path))
    text = (tmp_path / "rel_out" / "grid" / "grid.sbatch").read_text()
    assert f"--output_path={tmp_path / 'rel_out'} " in text and f"--data_dir={grid_bench} " in text
    assert f"'--dataset_id={os.path.join(grid_bench, 'orders.json')}#a'" in text and "\ncd " not in text
    bad = grid("plan", tiny_t5, grid_bench, str(tmp_path / "out"), "--num_epoch", "3", check=False)
    assert bad.returncode == 2 and "unknown flag --num_epoch (did you mean --num_epochs?)" in bad.stderr


def prediction_files(out):
    return sorted(os.path.relpath(os.path.join(r, f), out) for r, _, fs in os.walk(out) for f in fs
                  if f.endswith(".jsonl") or f == "metrics.json")


def test_slurm_elements_and_local_jobs_finish_the_plan_as_direct_pipeline_runs(tiny_t5, grid_bench, tmp_path):
    import torch

    from rkif.pipeline import run_order

    out = str(tmp_path / "grid_out")
    grid("slurm", tiny_t5, grid_bench, out, *FAST, "--max_concurrent", "2", "--partition", "gpu",
         "--sbatch=--mem=8G")
    script = os.path.join(out, "grid", "grid.sbatch")
    text = open(script).read()
    assert "#SBATCH --array=0-7%2" in text and "#SBATCH --signal=B:TERM@300" in text and "#SBATCH --mem=8G" in text
    for i in range(4):  # half the array as plain shell; the other half by `local`
        p = subprocess.run(["bash", script], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "OMP_NUM_THREADS": "1"},
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
    status = grid("status", tiny_t5, grid_bench, out, *FAST).stdout
    assert "8 sequences: 4 done, 4 pending" in status
    local = grid("local", tiny_t5, grid_bench, out, *FAST, "--gpus", "cpu", "--jobs", "2").stdout
    assert local.count("skip: ") == 4 and "[4/4] done: " in local and "8 sequences: 8 done" in local
    stamps = {f: os.path.getmtime(os.path.join(out, f)) for f in prediction_files(out) if f.endswith(".jsonl")}
    for i in (7,):  # an index local ran, through bash: a finished sequence, nothing is redone
        p = subprocess.run(["bash", script], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "OMP_NUM_THREADS": "1"},
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
    assert stamps == {f: os.path.getmtime(os.path.join(out, f)) for f in stamps}
    mtl_log = os.path.join(out, "grid", os.path.basename(tiny_t5) + "lora_MTL_dataset_id_orders_b_seed7.log")
    assert "skip: order" in open(mtl_log).read()
    assert all(open(os.path.join(out, "grid", f)).read().strip() == "0" for f in os.listdir(os.path.join(out, "grid"))
               if f.endswith(".exit"))

    direct = str(tmp_path / "direct_out")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seq in plan_sequences("SeqLoRA,MTL", os.path.join(grid_bench, "orders.json"), "42,7"):
            run_order(base_model=tiny_t5, dataset_id=seq.dataset_id, methods=seq.method, data_dir=grid_bench,
                      output_path=direct, seed=seq.seed, max_steps=2, batch_size=4, micro_batch_size=4,
                      val_set_size=0, gen_batch_size=8, max_length=8, logging_steps=100, eval_steps=100)
    finally:
        torch.set_num_threads(threads)
    files = prediction_files(direct)
    assert files == prediction_files(out) and len(files) == 4 * (4 + 2) + 4 * (2 + 1)
    for f in files:
        if f.endswith(".jsonl"):
            assert filecmp.cmp(os.path.join(out, f), os.path.join(direct, f), shallow=False), f
        else:
            a, b = (json.load(open(os.path.join(d, f))) for d in (out, direct))
            assert (a.get("OP"), a.get("BWT")) == (b.get("OP"), b.get("BWT")), f
    report = subprocess.run([sys.executable, os.path.join(ROOT, "src", "report.py"), "--output_path", out],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    table = open(os.path.join(out, "report", "report.md")).read()
    assert "missing" not in table and "| SeqLoRA | rkif |" in table and "| MTL | rkif |" in table
    assert "| 7,42 |" in table
    summary = json.load(open(os.path.join(out, "summary_dataset_id_orders_a.json")))
    assert sorted(r["method"] for r in summary["tasks"]) == ["MTL", "SeqLoRA"]  # one method per sequence, merged


def test_sigterm_mid_task_stops_the_element_and_a_rerun_resumes_and_finishes(tiny_t5, grid_bench, tmp_path):
    out = str(tmp_path / "out")
    slow = ["--max_steps", "60", "--batch_size", "4", "--micro_batch_size", "4", "--val_set_size", "0",
            "--eval_steps", "5", "--gen_batch_size", "8", "--max_length", "8", "--logging_steps", "1000"]
    grid("slurm", tiny_t5, grid_bench, out, *slow, methods="SeqLoRA", seeds="42")
    script = os.path.join(out, "grid", "grid.sbatch")
    seq = plan_sequences("SeqLoRA", os.path.join(grid_bench, "orders.json"), "42")[0]  # element 0: order a
    setup = setup_of(tiny_t5, grid_bench, out)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "OMP_NUM_THREADS": "1"}
    task0 = adapter_dir(out, tiny_t5, "SeqLoRA", "orders_a", 0, TWO[0])
    element = subprocess.Popen(["bash", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not os.path.isfile(os.path.join(task0, "checkpoint-5", "trainer_state.json")):
        assert element.poll() is None and time.time() < deadline, "no checkpoint before the element ended"
        time.sleep(0.05)
    assert progress(seq, setup)["state"] == "running"  # its run folder's lock is held
    element.send_signal(signal.SIGTERM)
    element.communicate(timeout=120)
    assert element.returncode == 143
    assert open(os.path.join(out, "grid", seq.name(setup) + ".exit")).read().strip() == "143"
    p = progress(seq, setup)
    assert p["state"] == "stopped" and p["tasks_done"] == 0
    # a second copy of a running sequence stops at the lock, naming the holder
    with hold_folder(run_dir(out, tiny_t5, "SeqLoRA", "orders_a")):
        busy = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300)
        assert busy.returncode == 2
    assert "is in use by another process" in open(os.path.join(out, "grid", seq.name(setup) + ".log")).read()
    rerun = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    log = open(os.path.join(out, "grid", seq.name(setup) + ".log")).read()
    assert f"resuming task 0-{TWO[0]} from" in log
    assert progress(seq, setup)["state"] == "done"
    status = grid("status", tiny_t5, grid_bench, out, *slow, methods="SeqLoRA", seeds="42").stdout
    assert "1 done, 1 pending" in status  # order b was never run


def test_device_check_figures_scale_to_the_models_layers_or_are_refused(tmp_path):
    """The device check times LLaMA-2-7B's shapes with 4 of its 32 layers: read unscaled, its step times were
    about 8x too low for the grid's GPU-hours."""
    from rkif.errors import InputError
    from rkif.grid import model_layer_count

    check = tmp_path / "device_check.json"
    sections = {"llama_methods": {"RKIF": {"seconds_per_step": 0.5}, "SeqLoRA": {"seconds_per_step": 0.25}},
                "llama_generation": {"seconds_batched": 4.0, "examples": 16}}
    check.write_text(json.dumps({"settings": {"layers": {"llama": 4}}, "sections": sections}))
    model = tmp_path / "llama-2-7b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 32}))
    layers = model_layer_count(str(model), "llama")
    assert layers == 32 and model_layer_count(str(tmp_path / "nowhere"), "llama") is None
    assert step_seconds_from_device_check(str(check), "llama", layers) == ({"RKIF": 4.0, "SeqLoRA": 2.0}, 2.0, 8.0)
    with pytest.raises(InputError, match="timed a 4-layer llama; to scale it to the model, --base_model must be"):
        step_seconds_from_device_check(str(check), "llama", None)
    # a report from before the layers were recorded: its --llama_layers setting
    check.write_text(json.dumps({"settings": {"llama_layers": 8}, "sections": sections}))
    assert step_seconds_from_device_check(str(check), "llama", 32)[2] == 4.0
    check.write_text(json.dumps({"tiny": True, "settings": {"layers": {"llama": 2}}, "sections": sections}))
    with pytest.raises(InputError, match="is a --tiny report"):
        step_seconds_from_device_check(str(check), "llama", 32)
