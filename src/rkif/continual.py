"""Backbone-independent wiring of one continual-learning task: which data, which adapters, where."""

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field

from .adapters import adapter_exists
from .data import check_task_records, load_records, task_file
from .errors import InputError
from .memory import build_memory_buffer, validation_set
from .plain_data import check_plain
from .methods import get_method
from .recipes import DEFAULT_RECIPE
from .tasks import check_task_id, resolve_order, task_metrics

VAL_PER_TASK = 25  # fixed in the released recipe; val_set_size only switches validation on or off
DEFAULT_SEED = 42  # runs with another seed get their own folders (suffix _seed{n})


def run_name(model_name, method, order_name, seed=DEFAULT_SEED, recipe=DEFAULT_RECIPE):
    """{model_name}_{method}_dataset_id_{order}, plus _recipe-{name} for a recipe other than rkif and
    _seed{n} for a seed other than 42 (the released names stay as they were)."""
    return f"{model_name}_{method}_dataset_id_{order_name}{run_suffix(seed, recipe)}"


def run_suffix(seed=DEFAULT_SEED, recipe=DEFAULT_RECIPE):
    return (("" if (recipe or DEFAULT_RECIPE) == DEFAULT_RECIPE else f"_recipe-{recipe}")
            + ("" if int(seed) == DEFAULT_SEED else f"_seed{int(seed)}"))


def run_dir(output_path, base_model, method, order_name, seed=DEFAULT_SEED, recipe=DEFAULT_RECIPE):
    model_name = os.path.basename(os.path.normpath(base_model)) + "lora"
    return os.path.join(output_path, run_name(model_name, method, order_name, seed, recipe))


def adapter_dir(output_path, base_model, method, order_name, task_id, task, seed=DEFAULT_SEED,
                recipe=DEFAULT_RECIPE):
    return os.path.join(run_dir(output_path, base_model, method, order_name, seed, recipe), f"{task_id}-{task}")


@dataclass
class TaskPlan:
    """Everything one task's training reads, checked before anything is written."""

    order_name: str
    tasks: list
    task_id: int
    method: str
    output_dir: str
    previous_adapter: str = None
    nothing_to_do: str = None  # why this task id trains nothing (MTL trains once, at the last task id)
    train: list = field(default_factory=list)
    memory: list = field(default_factory=list)
    validation: list = field(default_factory=list)

    @property
    def task(self):
        return self.tasks[self.task_id]


def plan_task(*, method_name, dataset_id, task_id, data_dir, output_path, base_model,
              memory_data_ratio, val_set_size, seed=42, suffix="_T5", fields=("input", "output"),
              recipe=DEFAULT_RECIPE):
    method = get_method(method_name)
    if not base_model:
        raise InputError("--base_model: required (a local model folder or a model id)")
    order_name, tasks = resolve_order(dataset_id)
    check_task_id(task_id, tasks)
    if not os.path.isdir(data_dir):
        raise InputError(f"--data_dir: folder {data_dir} does not exist")
    if memory_data_ratio < 0:
        raise InputError(f"--memory_data_ratio: must be >= 0 (percent of each earlier task), got {memory_data_ratio}")

    plan = TaskPlan(order_name, tasks, task_id, method_name,
                    adapter_dir(output_path, base_model, method_name, order_name, task_id, tasks[task_id], seed,
                                recipe))
    if not method.sequential and task_id != len(tasks) - 1:
        plan.nothing_to_do = (f"{method_name} trains once, on all {len(tasks)} tasks together, at --task_id "
                              f"{len(tasks) - 1}; nothing to train for task {task_id}")
        return plan
    if task_id > 0 and method.sequential:
        prev = adapter_dir(output_path, base_model, method_name, order_name, task_id - 1, tasks[task_id - 1], seed,
                           recipe)
        if not adapter_exists(prev):
            raise InputError(
                f"the adapter of task {task_id - 1} ({tasks[task_id - 1]}) is missing at {prev}; "
                f"train task {task_id - 1} first"
            )
        plan.previous_adapter = prev
        # what the task will unpickle from it (the adapter; EWC's state), checked before any work
        check_plain(os.path.join(prev, name) for name in ("adapter_model.bin", "ewc_state.pt"))

    metrics = task_metrics(dataset_id)

    def read(split, task):
        path = task_file(data_dir, split, task, suffix)
        return check_task_records(path, load_records(path, fields), metrics[task])

    plan.train = (read("train", plan.task) if method.sequential
                  else [r for t in tasks for r in read("train", t)])  # MTL: the union of the order's tasks
    if method.memory != "none" and task_id > 0:
        earlier = [read("train", t) for t in tasks[:task_id]]
        plan.memory = build_memory_buffer(earlier, memory_data_ratio, seed,
                                          free_text=[metrics[t] == "rougeL" for t in tasks[:task_id]])
        if not plan.memory:
            raise InputError(
                f"--memory_data_ratio {memory_data_ratio}: the memory buffer of tasks {tasks[:task_id]} is empty "
                "(n_i = floor(|train_i| * ratio / 100) is 0 for every earlier task); raise the ratio"
            )
    if val_set_size > 0:
        plan.validation = validation_set([read("dev", t) for t in tasks[: task_id + 1]], VAL_PER_TASK, seed)
    return plan


def library_versions():
    import accelerate
    import datasets
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "datasets": datasets.__version__, "accelerate": accelerate.__version__}


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def device_name():
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def run_info_json(settings, *, world_size, micro_batch_size, gradient_accumulation_steps, started, extra):
    info = {
        "settings": settings,
        "versions": library_versions(),
        "device": device_name(),
        "world_size": world_size,
        "micro_batch_size": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "effective_batch_size": micro_batch_size * gradient_accumulation_steps * world_size,
        "git_commit": git_commit(),
        "wall_time_s": round(time.time() - started, 3),
        **extra,
    }
    return json.dumps(info, indent=2, default=str)
