"""The paper's grid as independent sequences, for a scheduler (Slurm) or one node with several GPUs.

A sequence is one method on every task of one order with one seed, then its predictions and
scores: one `src/run_pipeline.py --methods M --dataset_id O --seed S ...` command. The pipeline
resumes by itself (finished tasks and prediction files are skipped, an unfinished task restarts
from its newest complete checkpoint) and holds its run folder's lock, so a sequence run twice at
once stops the second copy. scripts/grid.py is the command line; this module is its logic.
"""

import math
import os
import shlex
import sys

from .adapters import adapter_exists
from .run_folders import adapter_dir, run_dir
from .task_files import read_json
from .errors import InputError
from .prediction_folders import generation_jobs, prediction_dir, prediction_file
from .folder_lock import lock_holder
from .methods import get_method, prediction_kinds
from .recipes import recipe_values
from .settings import MemorySettings, TrainingSettings
from .tasks import is_custom, read_description, resolve_order

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORDER_GROUPS = {"standard": ("4", "5", "6"), "long": ("1", "2", "3")}
GRID_FOLDER = "grid"  # under --output_path: one log and one exit-status file per sequence


def as_list(value, flag):
    """A comma-separated flag as a list of strings (fire hands `a,b` over as a tuple, `a` as a str or int)."""
    items = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    items = [str(v).strip() for v in items if str(v).strip()]
    if not items:
        raise InputError(f"--{flag}: expected a comma-separated list, got {value!r}")
    return items


def expand_orders(value):
    """Order ids: standard (4,5,6), long (1,2,3), built-in ids, or custom files (one per named order)."""
    orders = []
    for item in as_list(value, "orders"):
        item = absolute_order(item)
        if item.lower() in ORDER_GROUPS:
            orders += ORDER_GROUPS[item.lower()]
        elif is_custom(item) and "#" not in item and os.path.isfile(item):
            named = [n for n in read_description(item)[0] if n]
            orders += [f"{item}#{n}" for n in named] if len(named) > 1 else [item]
        else:
            orders.append(item)
    for order in orders:
        resolve_order(order)  # an unknown id or a missing file stops here, named
    return list(dict.fromkeys(orders))


class Sequence:
    def __init__(self, method, dataset_id, seed):
        self.method, self.dataset_id, self.seed = method, dataset_id, int(seed)
        self.order_name, self.tasks = resolve_order(dataset_id)

    def name(self, setup):
        """The run folder's name ({model}lora_{method}_dataset_id_{order}[_recipe-..][_seed..]): the log and
        exit files' name, distinct for every model, recipe and seed sharing an output path."""
        return os.path.basename(run_dir(setup["output_path"], setup["base_model"], self.method, self.order_name,
                                        self.seed, setup["recipe"]))

    def __repr__(self):
        return f"{self.method} order {self.order_name} seed {self.seed}"


def plan_sequences(methods, orders, seeds):
    methods = as_list(methods, "methods")
    for m in methods:
        get_method(m, flag="methods")
    seed_list = as_list(seeds, "seeds")
    bad = [s for s in seed_list if not s.isdigit()]
    if bad:
        raise InputError(f"--seeds: expected non-negative integers, got {bad[0]!r}")
    return [Sequence(m, o, int(s)) for m in methods for o in expand_orders(orders) for s in seed_list]


def flag_args(flags):
    """--name=value arguments of a flags dict, as the pipeline reads them back."""
    out = []
    for k, v in flags.items():
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        out.append(f"--{k}={v}")
    return out


def pipeline_command(seq, setup, python=None):
    """The argv that runs one sequence."""
    return [python or sys.executable, os.path.join(ROOT, "src", "run_pipeline.py"), f"--methods={seq.method}",
            f"--dataset_id={seq.dataset_id}", f"--seed={seq.seed}", f"--base_model={setup['base_model']}",
            f"--data_dir={setup['data_dir']}", f"--output_path={setup['output_path']}",
            f"--backbone={setup['backbone']}", f"--recipe={setup['recipe']}", *flag_args(setup["flags"])]


def grid_files(setup, seq):
    folder = os.path.join(setup["output_path"], GRID_FOLDER)
    return os.path.join(folder, seq.name(setup) + ".log"), os.path.join(folder, seq.name(setup) + ".exit")


def absolute_setup(setup):
    """Paths made absolute (a Slurm element may start in another directory than the one planning it);
    a base model that is not a local path (a hub id) stays as given."""
    def absolute(path):
        return os.path.abspath(path) if path and os.path.exists(path) else path

    return {**setup, "output_path": os.path.abspath(setup["output_path"]), "data_dir": absolute(setup["data_dir"]),
            "base_model": absolute(setup["base_model"])}


def absolute_order(dataset_id):
    if not is_custom(dataset_id):
        return dataset_id
    path, _, name = str(dataset_id).partition("#")
    return os.path.abspath(path) + (f"#{name}" if name else "")


def kinds_of(seq, flags):
    return prediction_kinds(get_method(seq.method), flags.get("matrix"))


def progress(seq, setup):
    """What is done of a sequence: tasks with an adapter, complete prediction files, scored kinds,
    the lock holder (running), the last exit status, and one word for all of it."""
    out, base, recipe = setup["output_path"], setup["base_model"], setup["recipe"]
    trained = get_method(seq.method).trained_task_ids(len(seq.tasks))
    done_tasks = sum(adapter_exists(adapter_dir(out, base, seq.method, seq.order_name, t, seq.tasks[t], seq.seed,
                                                recipe)) for t in trained)
    predictions = total = scored = 0
    kinds = kinds_of(seq, setup["flags"])
    for kind in kinds:
        folder = prediction_dir(out, base, seq.method, seq.order_name, kind, seed=seq.seed, recipe=recipe)
        jobs = generation_jobs(kind, len(seq.tasks))
        total += len(jobs)
        predictions += sum(os.path.isfile(prediction_file(folder, kind, t, i, seq.tasks[i])) for t, i in jobs)
        scored += os.path.isfile(os.path.join(folder, "metrics.json"))
    holder = lock_holder(run_dir(out, base, seq.method, seq.order_name, seq.seed, recipe))
    exit_status = None
    exit_file = grid_files(setup, seq)[1]
    if os.path.isfile(exit_file):
        with open(exit_file) as f:
            text = f.read().strip()
        exit_status = int(text) if text.lstrip("-").isdigit() else None
    if holder:
        state = "running"
    elif scored == len(kinds):
        state = "done"
    elif exit_status in (130, 143):  # SIGINT / SIGTERM (a time limit): a rerun resumes from the checkpoint
        state = "stopped"
    elif exit_status not in (None, 0):
        state = "failed"
    elif done_tasks or predictions:
        state = "partial"
    else:
        state = "pending"
    return {"state": state, "tasks_done": done_tasks, "tasks": len(trained), "predictions_done": predictions,
            "predictions": total, "scored": scored, "kinds": len(kinds), "exit_status": exit_status,
            "holder": holder}


# ---- GPU-hours -------------------------------------------------------------------------------------

def count_examples(data_dir, split, task, backbone):
    path = os.path.join(data_dir, split, f"{task}{'_T5' if backbone == 't5' else ''}.json")
    if not os.path.isfile(path):
        raise InputError(f"--data_dir: {path} does not exist (needed to count {split} examples for the estimate)")
    return len(read_json(path))


LAYER_KEYS = {"t5": "num_layers", "llama": "num_hidden_layers"}


def model_layer_count(base_model, backbone):
    """The base model's layer count from its config.json (T5: encoder layers; LLaMA: decoder layers), or None
    where it has none here (a hub name, a GGUF file)."""
    path = os.path.join(str(base_model), "config.json")
    if not os.path.isfile(path):
        return None
    value = read_json(path).get(LAYER_KEYS[backbone])
    return int(value) if value else None


def measured_layers(report, backbone):
    """The layer count a device_check.json timed: recorded (settings.layers); reports made before it was
    recorded: LLaMA's --llama_layers (4 by default), T5-large's 24 (2 for --tiny)."""
    settings = report.get("settings", {})
    if backbone in settings.get("layers", {}):
        return int(settings["layers"][backbone])
    if report.get("tiny"):
        return 2
    return int(settings.get("llama_layers", 4)) if backbone == "llama" else 24


def step_seconds_from_device_check(path, backbone, model_layers=None):
    """({method: seconds per step}, seconds per generated test example, the layer scale applied) from a
    device_check.json, scaled from the layers it timed to model_layers (the model the grid runs).

    The check times LLaMA-2-7B's shapes with a few of its 32 layers: its figures, unscaled, were about 8x
    too low. Step and generation time grow about linearly in the layers (the embedding, output layer and
    loss do not, so the scaled figure is a slight overestimate). Without model_layers (no config.json at
    --base_model) the report is refused, as is a --tiny one (CPU and tiny shapes).
    """
    report = read_json(path)
    if isinstance(report, dict) and report.get("tiny"):
        raise InputError(f"--device_check: {path} is a --tiny report (tiny models on a CPU): its times say nothing "
                         "of a GPU; run scripts/device_check.py on the GPU, or give --seconds_per_step")
    sections = report.get("sections", {}) if isinstance(report, dict) else {}
    methods = sections.get(f"{backbone}_methods", {})
    per_step = {m: v["seconds_per_step"] for m, v in methods.items()
                if isinstance(v, dict) and v.get("seconds_per_step")}
    generation = sections.get(f"{backbone}_generation", {})
    per_example = (generation["seconds_batched"] / generation["examples"]
                   if generation.get("seconds_batched") and generation.get("examples") else None)
    if not per_step:
        raise InputError(f"--device_check: {path} has no seconds per step for {backbone} (section "
                         f"{backbone}_methods); give --seconds_per_step")
    timed = measured_layers(report, backbone)
    if model_layers is None:
        raise InputError(f"--device_check: {path} timed a {timed}-layer {backbone}; to scale it to the model, "
                         "--base_model must be a folder with its config.json (or give --seconds_per_step)")
    scale = model_layers / timed
    per_step = {m: v * scale for m, v in per_step.items()}
    return per_step, None if per_example is None else per_example * scale, scale


def sequence_hours(seq, setup, data_dir, seconds_per_step, seconds_per_example, counts):
    """Estimated GPU-hours of one sequence: its optimizer steps x seconds per step, plus generation.

    Steps per task: ceil(examples / effective batch) x epochs (max_steps when given), with the
    recipe's values unless a flag overrides them; the method says which tasks it trains and on how many
    examples (Replay adds its memory, MTL trains once on the union). counts caches {(split, task): examples}."""
    flags, backbone = setup["flags"], setup["backbone"]
    method = get_method(seq.method)

    def n(split, task):
        if (split, task) not in counts:
            counts[(split, task)] = count_examples(data_dir, split, task, backbone)
        return counts[(split, task)]

    steps = 0
    for t in method.trained_task_ids(len(seq.tasks)):
        values = {**recipe_values(setup["recipe"], backbone, seq.tasks, t, method),
                  **{k: v for k, v in flags.items() if v is not None}}
        examples = method.training_examples(t, seq.tasks, lambda task: n("train", task),
                                            float(values.get("memory_data_ratio", MemorySettings.memory_data_ratio)))
        max_steps = int(values.get("max_steps", TrainingSettings.max_steps))
        steps += max_steps if max_steps > 0 else (math.ceil(examples / int(values["batch_size"]))
                                                  * float(values["num_epochs"]))
    rate = seconds_per_step.get(seq.method, seconds_per_step.get("*"))
    if rate is None:
        raise InputError(f"no seconds per step for {seq.method}: give --seconds_per_step")
    generated = 0
    for kind in kinds_of(seq, flags):
        generated += sum(n("test", seq.tasks[i]) for _, i in generation_jobs(kind, len(seq.tasks)))
    return (steps * rate + generated * (seconds_per_example or 0.0)) / 3600


# ---- Slurm ---------------------------------------------------------------------------------------

def slurm_script(sequences, setup, *, partition=None, gpus_per_job=1, time_limit="24:00:00", account=None,
                 max_concurrent=None, signal_seconds=300, sbatch_lines=(), python=None, job_name="rkif-grid"):
    """An sbatch array script, one element per sequence, that also runs as a plain shell script
    (SLURM_ARRAY_TASK_ID picks the element). SIGTERM arrives signal_seconds before the time limit
    (--signal=B:TERM@...), the script passes it to the pipeline, which saves a checkpoint and exits
    143; the element then requeues itself and resumes from that checkpoint in its next allocation."""
    n = len(sequences)
    grid = os.path.join(setup["output_path"], GRID_FOLDER)
    if gpus_per_job not in (0, 1):
        raise InputError(f"--gpus_per_job: each sequence is one process on one GPU (0 or 1), got {gpus_per_job}; "
                         "run more sequences at once instead (--max_concurrent)")
    head = ["#!/usr/bin/env bash", f"#SBATCH --job-name={job_name}",
            f"#SBATCH --array=0-{n - 1}" + (f"%{int(max_concurrent)}" if max_concurrent else ""),
            f"#SBATCH --gres=gpu:{int(gpus_per_job)}" if gpus_per_job else None,
            f"#SBATCH --time={time_limit}", f"#SBATCH --partition={partition}" if partition else None,
            f"#SBATCH --account={account}" if account else None,
            f"#SBATCH --signal=B:TERM@{int(signal_seconds)}", "#SBATCH --requeue", "#SBATCH --open-mode=append",
            f"#SBATCH --output={os.path.join(grid, 'slurm-%A_%a.out')}", *sbatch_lines]
    lines = [h for h in head if h]
    lines += [
        f"# {n} sequences (method x order x seed) of the Recurrent-KIF grid, written by scripts/grid.py slurm.",
        "#   sbatch THIS_FILE                         # on Slurm: one array element per sequence",
        f"#   SLURM_ARRAY_TASK_ID=0 bash THIS_FILE     # anywhere: runs element 0 (0-{n - 1})",
        "# An element resumes where the sequence stopped; a second copy of a running sequence stops at its lock.",
        "set -uo pipefail",
        f'i="${{SLURM_ARRAY_TASK_ID:?set SLURM_ARRAY_TASK_ID to the element to run, 0-{n - 1}}}"',
        'case "$i" in',
    ]
    for k, seq in enumerate(sequences):
        cmd = " ".join(shlex.quote(a) for a in pipeline_command(seq, setup, python))
        lines.append(f"  {k}) name={shlex.quote(seq.name(setup))}; cmd=({cmd}) ;;")
    lines += [
        f'  *) echo "error: SLURM_ARRAY_TASK_ID $i: expected 0-{n - 1}" >&2; exit 2 ;;',
        "esac",
        f"mkdir -p {shlex.quote(grid)}",
        f'log={shlex.quote(grid)}/"$name".log',
        'echo "=== $(date "+%Y-%m-%d %H:%M:%S") element $i: ${cmd[*]}" >> "$log"',
        "child=",
        "trap '[ -n \"$child\" ] && kill -TERM \"$child\" 2>/dev/null' TERM INT",
        "# its own session: a Ctrl-C or a signal to this script's group reaches the pipeline once, through the",
        "# trap (a second signal would make it stop without its checkpoint)",
        "launcher=(); command -v setsid >/dev/null && launcher=(setsid)",
        '"${launcher[@]}" "${cmd[@]}" >> "$log" 2>&1 &',
        "child=$!",
        'wait "$child"; rc=$?',
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done  # a trapped signal ended the first wait',
        f'echo "$rc" > {shlex.quote(grid)}/"$name".exit',
        'echo "=== element $i ($name) exited $rc" >> "$log"',
        'if [ "$rc" -eq 143 ] && [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && command -v scontrol >/dev/null; then',
        '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"  # stopped for its time limit: resume later',
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"
