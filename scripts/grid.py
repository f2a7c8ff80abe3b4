"""The paper's whole table as independent sequences (method x order x seed): plan, Slurm, one node, status.

    python scripts/grid.py plan   --methods RKIF,SeqLoRA --orders standard,long --seeds 42,7 \\
        --base_model /models/t5-large --data_dir data/long_sequence --output_path output --seconds_per_step 0.9
    python scripts/grid.py slurm  ... --partition gpu --time_limit 48:00:00 --max_concurrent 16   # then: sbatch FILE
    python scripts/grid.py local  ... --gpus 0,1,2,3        # one sequence per GPU until all are done
    python scripts/grid.py local  ... --gpus cpu --jobs 2   # on CPU, threads divided between the jobs
    python scripts/grid.py status ...                       # done / running / stopped / failed / partial / pending
    python src/report.py --output_path output               # the table; unfinished cells say missing (k/n seeds)

Every sequence is one `src/run_pipeline.py` command (plan prints it): it resumes by itself, and
its run folder's lock stops a second copy. --orders takes standard (4,5,6), long (1,2,3), ids, or
custom benchmark files (one sequence per named order). Any other flag (--num_epochs, --matrix,
--recipe's overrides, ...) goes to every pipeline command unchanged. Logs and exit codes:
{output_path}/grid/{run folder name}.log / .exit (e.g. t5-largelora_RKIF_dataset_id_4_seed7.log).
"""

import collections
import json
import os
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))

from rkif.errors import InputError
from rkif.cli_runner import run
from rkif.pipeline import PIPELINE_FLAGS as PIPELINE_OWN_FLAGS
from rkif.training import TRAINING_FLAGS
from rkif.recipes import check_recipe
from rkif.grid import (GRID_FOLDER, absolute_setup, as_list, grid_files, pipeline_command, plan_sequences,
                       progress, sequence_hours, slurm_script, step_seconds_from_device_check,
                       model_layer_count)
from rkif.settings import PipelineSettings, RunSettings

COMMANDS = ("plan", "slurm", "local", "status")
GRID_FLAGS = ("methods", "dataset_id", "seed", "base_model", "data_dir", "output_path", "backbone", "recipe")
PIPELINE_FLAGS = (set(TRAINING_FLAGS) | set(PIPELINE_OWN_FLAGS)) - set(GRID_FLAGS)


def write_atomically(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def show_plan(sequences, setup, out, seconds_per_step, seconds_per_example, device_check):
    rate, per_example, source = None, seconds_per_example, None
    if seconds_per_step is not None:
        rate, source = {"*": float(seconds_per_step)}, f"--seconds_per_step {seconds_per_step}"
    elif device_check:
        layers = model_layer_count(setup["base_model"], setup["backbone"])
        rate, measured, scale = step_seconds_from_device_check(device_check, setup["backbone"], layers)
        per_example = per_example if per_example is not None else measured
        source = (f"{device_check} scaled x{scale:.3g} to the model's {layers} layers "
                  f"({', '.join(f'{m} {v:.3g}' for m, v in sorted(rate.items()))} s/step)")
    counts, rows = {}, []
    for seq in sequences:
        p = progress(seq, setup)
        hours = (sequence_hours(seq, setup, setup["data_dir"], rate, per_example, counts) if rate else None)
        rows.append({"method": seq.method, "order": seq.order_name, "dataset_id": seq.dataset_id, "seed": seq.seed,
                     "state": p["state"], "tasks_done": f"{p['tasks_done']}/{p['tasks']}",
                     "predictions_done": f"{p['predictions_done']}/{p['predictions']}",
                     "scored": f"{p['scored']}/{p['kinds']}", "gpu_hours": None if hours is None else round(hours, 2),
                     "command": " ".join(pipeline_command(seq, setup))})
    print(f"{'method':9s} {'order':14s} {'seed':>4s} {'state':8s} {'tasks':>6s} {'preds':>7s} {'scored':>6s} "
          f"{'GPU-h':>7s}  command")
    for r in rows:
        hours = "" if r["gpu_hours"] is None else f"{r['gpu_hours']:.2f}"
        print(f"{r['method']:9s} {r['order']:14s} {r['seed']:4d} {r['state']:8s} {r['tasks_done']:>6s} "
              f"{r['predictions_done']:>7s} {r['scored']:>6s} {hours:>7s}  {r['command']}")
    if rate:
        per_order = collections.defaultdict(float)
        for r in rows:
            per_order[r["order"]] += r["gpu_hours"]
        print("\nestimated GPU-hours per order: " + ", ".join(f"{o} {h:.1f}" for o, h in per_order.items())
              + f"; total {sum(per_order.values()):.1f} ({len(rows)} sequences)")
        print(f"assumed: {source}; generation {per_example or 0:.3g} s per test example")
    else:
        print("\nno GPU-hour estimate: give --seconds_per_step (s per optimizer step on your GPU) or --device_check "
              "(a device_check.json from scripts/device_check.py)")
    if out.endswith(".tsv"):
        keys = list(rows[0])
        text = "\t".join(keys) + "\n" + "".join("\t".join(str(r[k]) for k in keys) + "\n" for r in rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    write_atomically(out, text)
    print(f"written: {out}")


def show_status(sequences, setup):
    states = collections.Counter()
    print(f"{'method':9s} {'order':14s} {'seed':>4s} {'state':8s} {'tasks':>6s} {'preds':>7s} {'scored':>6s}  note")
    for seq in sequences:
        p = progress(seq, setup)
        states[p["state"]] += 1
        note = ""
        if p["holder"]:
            note = f"pid {p['holder'].get('pid')} on {p['holder'].get('host')} since {p['holder'].get('since')}"
        elif p["state"] == "failed":
            note = f"exit {p['exit_status']}; log {grid_files(setup, seq)[0]}"
        print(f"{seq.method:9s} {seq.order_name:14s} {seq.seed:4d} {p['state']:8s} {p['tasks_done']}/{p['tasks']:<4d} "
              f"{p['predictions_done']:>3d}/{p['predictions']:<3d} {p['scored']:>3d}/{p['kinds']:<2d}  {note}")
    print(f"\n{len(sequences)} sequences: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    return states


def run_local(sequences, setup, gpus, jobs):
    """Every sequence not done (nor running elsewhere), one per slot, until all have run; returns the failures."""
    if str(gpus).strip().lower() == "cpu":
        n = int(jobs or 1)
        if n < 1:
            raise InputError(f"--jobs: expected a positive integer, got {jobs}")
        threads = str(max(1, (os.cpu_count() or 1) // n))
        slots = [("cpu", {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
                 for _ in range(n)]
    else:
        if jobs:
            raise InputError("--jobs is for --gpus cpu; with GPUs every GPU runs one sequence")
        slots = [(f"GPU {g}", {"CUDA_VISIBLE_DEVICES": g}) for g in as_list(gpus, "gpus")]
    todo = []
    for seq in sequences:
        state = progress(seq, setup)["state"]
        if state in ("done", "running"):
            print(f"skip: {seq} ({state})")
        else:
            todo.append(seq)
    total, finished, failed, running = len(todo), 0, [], {}
    stopping = []

    def stop(signum, frame):  # pass the signal on: each pipeline saves a checkpoint and exits
        stopping.append(signum)
        for proc, *_ in running.values():
            proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while todo or running:
            while todo and len(running) < len(slots) and not stopping:
                slot = next(i for i in range(len(slots)) if i not in running)
                seq = todo.pop(0)
                log, exit_file = grid_files(setup, seq)
                os.makedirs(os.path.dirname(log), exist_ok=True)
                handle = open(log, "a")
                handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {slots[slot][0]}\n")
                handle.flush()
                # its own session: Ctrl-C reaches it once, through stop() (a second signal would make the
                # pipeline stop without its checkpoint)
                proc = subprocess.Popen(pipeline_command(seq, setup), stdout=handle, stderr=subprocess.STDOUT,
                                        env={**os.environ, **slots[slot][1]}, start_new_session=True)
                running[slot] = (proc, seq, handle, time.time())
            if stopping and not running:
                break
            time.sleep(0.5)
            for slot, (proc, seq, handle, started) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                rc = 128 - rc if rc < 0 else rc  # killed by a signal: the shell's 128 + n, as the bash elements
                handle.close()
                del running[slot]
                write_atomically(grid_files(setup, seq)[1], f"{rc}\n")
                finished += 1
                minutes = (time.time() - started) / 60
                if rc == 0:
                    print(f"[{finished}/{total}] done: {seq} ({slots[slot][0]}, {minutes:.1f} min)", flush=True)
                else:
                    failed.append(seq)
                    print(f"[{finished}/{total}] FAILED: {seq} (exit {rc}, {slots[slot][0]}, {minutes:.1f} min; "
                          f"log {grid_files(setup, seq)[0]})", flush=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        print(f"stopped by signal {stopping[0]}: {len(todo)} sequences not started; a rerun resumes", flush=True)
        raise SystemExit(128 + stopping[0])
    return failed


def main(command, methods=PipelineSettings.methods, orders="standard,long", seeds="42", base_model=RunSettings.base_model,
         data_dir=RunSettings.data_dir, output_path=RunSettings.output_path, backbone=PipelineSettings.backbone,
         recipe=RunSettings.recipe, out=None, seconds_per_step=None,
         seconds_per_example=None, device_check=None, partition=None, gpus_per_job=1, time_limit="24:00:00",
         account=None, max_concurrent=None, signal_seconds=300, sbatch=None, gpus="0", jobs=None, **flags):
    """command: plan | slurm | local | status. out: the file plan (.jsonl or .tsv) or slurm writes (default
    {output_path}/grid/plan.jsonl, grid.sbatch). seconds_per_step / device_check: for the GPU-hour estimate;
    seconds_per_example: generation, per test example. slurm: partition, gpus_per_job, time_limit, account,
    max_concurrent (the array's %N), signal_seconds (SIGTERM that long before the limit), sbatch (extra
    #SBATCH options, ';'-separated, given as --sbatch="--mem=64G;--qos=high"). local: gpus (0,1,2,3 or cpu),
    jobs (with cpu). seconds_per_step is per optimizer step at the recipe's batch: a device_check.json measures
    the rkif recipe's (T5 8, LLaMA 64), so give your own figure for --recipe olora (batch 64 on T5)."""
    if command not in COMMANDS:
        raise InputError(f"unknown command {command!r}; expected one of {COMMANDS}")
    if not base_model:
        raise InputError("--base_model: required (it names the run folders and is what every sequence trains)")
    if backbone not in ("t5", "llama"):
        raise InputError(f"--backbone must be t5 or llama, got {backbone!r}")
    sequences = plan_sequences(methods, orders, seeds)
    setup = absolute_setup(dict(base_model=base_model, data_dir=data_dir, output_path=output_path,
                                backbone=backbone, recipe=recipe, flags=flags))
    output_path = setup["output_path"]
    check_recipe(recipe)
    grid = os.path.join(output_path, GRID_FOLDER)
    if command == "plan":
        show_plan(sequences, setup, out or os.path.join(grid, "plan.jsonl"), seconds_per_step, seconds_per_example,
                  device_check)
    elif command == "slurm":
        extra = [f"#SBATCH {line.strip()}" for line in str(sbatch or "").split(";") if line.strip()]
        path = out or os.path.join(grid, "grid.sbatch")
        os.makedirs(grid, exist_ok=True)  # Slurm opens the elements' --output files there before they start
        write_atomically(path, slurm_script(sequences, setup, partition=partition, gpus_per_job=gpus_per_job,
                                            time_limit=time_limit, account=account, max_concurrent=max_concurrent,
                                            signal_seconds=signal_seconds, sbatch_lines=extra))
        os.chmod(path, 0o755)
        print(f"written: {path} ({len(sequences)} array elements); submit with: sbatch {path}")
    elif command == "local":
        failed = run_local(sequences, setup, gpus, jobs)
        show_status(sequences, setup)
        if failed:
            raise SystemExit(1)
    else:
        show_status(sequences, setup)


if __name__ == "__main__":
    run(main, extra_flags=PIPELINE_FLAGS)
