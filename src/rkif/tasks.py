"""Task orders of the benchmark (docs/design.md, section 1) and custom benchmarks described in a JSON file."""

import os
import sys

from .task_files import read_json
from .errors import InputError

TASK_ORDERS = {
    1: "mnli cb wic copa qqp boolqa rte imdb yelp amazon sst-2 dbpedia agnews multirc yahoo".split(),
    2: "multirc boolqa wic mnli cb copa qqp rte imdb sst-2 dbpedia agnews yelp amazon yahoo".split(),
    3: "yelp amazon mnli cb copa qqp rte imdb sst-2 dbpedia agnews yahoo multirc boolqa wic".split(),
    4: "dbpedia amazon yahoo agnews".split(),
    5: "dbpedia amazon agnews yahoo".split(),
    6: "yahoo amazon agnews dbpedia".split(),
}


METRICS = ("accuracy", "rougeL")


def _task_list(tasks, where):
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        raise InputError(f"{where}: expected a non-empty JSON list of task names")
    if len(set(tasks)) != len(tasks):
        raise InputError(f"{where}: task names must be unique, got {tasks}")
    return tasks


def read_description(path):
    """(orders {name: tasks}, metrics {task: metric}) of a custom benchmark file.

    The file is a JSON list of task names, or an object with "tasks" (one order) and/or
    "orders" ({name: [tasks]}), and optionally "metrics" ({task: "accuracy" | "rougeL"};
    accuracy by default).
    """
    spec = read_json(path)
    if isinstance(spec, list):
        spec = {"tasks": spec}
    if not isinstance(spec, dict) or not ("tasks" in spec or "orders" in spec):
        raise InputError(f"{path}: expected a JSON list of task names, or an object with a 'tasks' list "
                         "or an 'orders' object")
    orders = {}
    if "tasks" in spec:
        orders[""] = _task_list(spec["tasks"], f"{path}: 'tasks'")
    if "orders" in spec:
        if not isinstance(spec["orders"], dict) or not spec["orders"]:
            raise InputError(f"{path}: 'orders' must be an object {{name: [tasks]}}")
        for name, tasks in spec["orders"].items():
            orders[str(name)] = _task_list(tasks, f"{path}: order {name!r}")
    known = {t for tasks in orders.values() for t in tasks}
    metrics = spec.get("metrics", {})
    if not isinstance(metrics, dict):
        raise InputError(f"{path}: 'metrics' must be an object {{task: metric}}")
    for task, metric in metrics.items():
        if task not in known:
            raise InputError(f"{path}: 'metrics' names {task!r}, which is in no order")
        if metric not in METRICS:
            raise InputError(f"{path}: metric {metric!r} of task {task!r}; expected one of {METRICS}")
    return orders, {t: metrics.get(t, "accuracy") for t in known}


def _split_custom(dataset_id):
    """'bench.json#2' -> ('bench.json', '2')."""
    path, _, order = str(dataset_id).partition("#")
    return path, order


def is_custom(dataset_id):
    path = _split_custom(dataset_id)[0]
    return isinstance(dataset_id, str) and (path.endswith(".json") or os.sep in path)


def resolve_order(dataset_id):
    """(order_name, task list) for a built-in id 1-6 or a custom benchmark file ("path.json" or
    "path.json#order"). order_name is what goes into output folder names: the id, or the file's
    stem (with "_order" when an order is named)."""
    if is_custom(dataset_id):
        path, order = _split_custom(dataset_id)
        if not os.path.isfile(path):
            raise InputError(f"--dataset_id: custom order file {path} does not exist")
        orders = read_description(path)[0]
        stem = os.path.splitext(os.path.basename(path))[0]
        if not order:
            if "" not in orders and len(orders) > 1:
                raise InputError(f"--dataset_id: {path} has several orders {sorted(orders)}; "
                                 f"pick one as {path}#NAME")
            return stem, orders.get("", next(iter(orders.values())))
        if order not in orders:
            raise InputError(f"--dataset_id: {path} has no order {order!r}; orders: {sorted(k for k in orders if k)}")
        return f"{stem}_{order}", orders[order]
    try:
        key = int(dataset_id)
    except (TypeError, ValueError):
        key = None
    if key not in TASK_ORDERS:
        raise InputError(
            f"--dataset_id: unknown order {dataset_id!r}; expected one of {sorted(TASK_ORDERS)} "
            "or the path of a JSON file listing task names"
        )
    return str(key), list(TASK_ORDERS[key])


def task_metrics(dataset_id):
    """{task: metric} of an order: accuracy for the built-in benchmark, per the file for custom ones."""
    tasks = resolve_order(dataset_id)[1]
    if not is_custom(dataset_id):
        return {t: "accuracy" for t in tasks}
    metrics = read_description(_split_custom(dataset_id)[0])[1]
    return {t: metrics[t] for t in tasks}


def check_task_id(task_id, tasks):
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 <= task_id < len(tasks):
        raise InputError(f"--task_id: {task_id!r} is out of range; this order has tasks 0..{len(tasks) - 1}")


if __name__ == "__main__":
    # `python -m rkif.tasks ORDER` prints the order's tasks, one per line; with --name first, the
    # name its output folders use (both used by the shell scripts).
    try:
        name_only = sys.argv[1] == "--name"
        name, tasks = resolve_order(sys.argv[2] if name_only else sys.argv[1])
        print(name if name_only else "\n".join(tasks))
    except (InputError, IndexError) as e:
        sys.exit(f"error: {e if isinstance(e, InputError) else 'usage: python -m rkif.tasks DATASET_ID'}")
