"""Task orders of the benchmark (design doc section 1) and custom orders from a JSON file."""

import json
import os
import sys

from .errors import InputError

TASK_ORDERS = {
    1: "mnli cb wic copa qqp boolqa rte imdb yelp amazon sst-2 dbpedia agnews multirc yahoo".split(),
    2: "multirc boolqa wic mnli cb copa qqp rte imdb sst-2 dbpedia agnews yelp amazon yahoo".split(),
    3: "yelp amazon mnli cb copa qqp rte imdb sst-2 dbpedia agnews yahoo multirc boolqa wic".split(),
    4: "dbpedia amazon yahoo agnews".split(),
    5: "dbpedia amazon agnews yahoo".split(),
    6: "yahoo amazon agnews dbpedia".split(),
}


def _read_custom_order(path):
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    tasks = spec.get("tasks") if isinstance(spec, dict) else spec
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        raise InputError(
            f"{path}: expected a non-empty JSON list of task names, or an object with a 'tasks' list"
        )
    if len(set(tasks)) != len(tasks):
        raise InputError(f"{path}: task names must be unique, got {tasks}")
    return tasks


def resolve_order(dataset_id):
    """(order_name, task list) for a built-in id 1-6 or the path of a JSON file listing task names.

    order_name is what goes into output folder names: the id, or the JSON file's stem.
    """
    if isinstance(dataset_id, str) and (dataset_id.endswith(".json") or os.sep in dataset_id):
        if not os.path.isfile(dataset_id):
            raise InputError(f"--dataset_id: custom order file {dataset_id} does not exist")
        return os.path.splitext(os.path.basename(dataset_id))[0], _read_custom_order(dataset_id)
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


def check_task_id(task_id, tasks):
    if not isinstance(task_id, int) or isinstance(task_id, bool) or not 0 <= task_id < len(tasks):
        raise InputError(f"--task_id: {task_id!r} is out of range; this order has tasks 0..{len(tasks) - 1}")


if __name__ == "__main__":
    # `python -m rkif.tasks ORDER` prints the order's tasks, one per line (used by the shell scripts).
    try:
        print("\n".join(resolve_order(sys.argv[1])[1]))
    except (InputError, IndexError) as e:
        sys.exit(f"error: {e if isinstance(e, InputError) else 'usage: python -m rkif.tasks DATASET_ID'}")
