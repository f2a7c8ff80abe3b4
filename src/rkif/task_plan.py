"""One continual-learning task, planned before anything is written: its data, memory, validation set,
the adapter it starts from and the folder it writes."""

import os
from dataclasses import dataclass, field

from .adapters import ADAPTER_WEIGHTS, adapter_exists
from .task_files import check_task_records, load_records, task_file
from .errors import InputError
from .memory import build_memory_buffer, validation_set
from .methods import get_method
from .plain_data import check_plain
from .run_folders import DEFAULT_RECIPE, adapter_dir
from .tasks import check_task_id, resolve_order, task_metrics

VAL_PER_TASK = 25  # fixed in the released recipe; val_set_size only switches validation on or off


@dataclass
class TaskPlan:
    """Everything one task's training reads, checked before anything is written."""

    order_name: str
    tasks: list
    task_id: int
    method: str
    output_dir: str
    previous_adapter: str = None
    nothing_to_do: str = None  # why this task id trains nothing (the method's word: MTL trains once, at the last id)
    train: list = field(default_factory=list)
    memory: list = field(default_factory=list)
    validation: list = field(default_factory=list)

    @property
    def task(self):
        return self.tasks[self.task_id]


def plan_task(*, method_name, dataset_id, task_id, data_dir, output_path, base_model,
              memory_data_ratio, val_set_size, seed, suffix="_T5", fields=("input", "output"),
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
    plan.nothing_to_do = method.nothing_to_train(task_id, len(tasks))
    if plan.nothing_to_do:
        return plan
    if method.starts_from_previous(task_id):
        prev = adapter_dir(output_path, base_model, method_name, order_name, task_id - 1, tasks[task_id - 1], seed,
                           recipe)
        if not adapter_exists(prev):
            raise InputError(
                f"the adapter of task {task_id - 1} ({tasks[task_id - 1]}) is missing at {prev}; "
                f"train task {task_id - 1} first"
            )
        plan.previous_adapter = prev
        # what the task will unpickle from it (the adapter; the method's state), checked before any work
        check_plain(os.path.join(prev, name) for name in (ADAPTER_WEIGHTS, *method.state_files))

    metrics = task_metrics(dataset_id)

    def read(split, task):
        path = task_file(data_dir, split, task, suffix)
        return check_task_records(path, load_records(path, fields), metrics[task])

    plan.train = method.training_records(lambda task: read("train", task), tasks, task_id)
    if method.uses_memory and task_id > 0:
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


