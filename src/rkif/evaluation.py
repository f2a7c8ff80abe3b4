"""Which adapter predicts which test split, where the files go, and the scores read back from them.

Kinds of prediction folder, beside the run folder `{model}lora_{method}_dataset_id_{id}`:
- avgPerf: the final adapter on every task's test split          -> `_avgPerf/{i}-{task}.jsonl`
- bwt:     the adapter saved after task i on task i's test split   -> `_bwt/{i}-{task}.jsonl`
- matrix:  the adapter after task t on every task i <= t           -> `_matrix/after_{t}/{i}-{task}.jsonl`
Backbones supply only `make_predictor(adapter_dir) -> predict(records) -> [str]`.
"""

import os

from .adapters import adapter_exists
from .continual import adapter_dir, run_dir
from .data import check_task_records, load_records, task_file
from .errors import InputError
from .generation import write_predictions
from .metrics import backward_transfer, check_complete, matrix_metrics, overall_performance, read_predictions, score

KINDS = ("avgPerf", "bwt", "matrix")


def prediction_dir(output_path, base_model, method, order_name, kind):
    return run_dir(output_path, base_model, method, order_name) + f"_{kind}"


def prediction_file(pred_dir, kind, t, i, task):
    """The .jsonl path; a released-format .txt of the same name is read when no .jsonl exists."""
    folder = os.path.join(pred_dir, f"after_{t}") if kind == "matrix" else pred_dir
    path = os.path.join(folder, f"{i}-{task}.jsonl")
    legacy = path[: -len(".jsonl")] + ".txt"
    return legacy if not os.path.isfile(path) and os.path.isfile(legacy) else path


def generation_jobs(kind, num_tasks, only=None):
    """(t, i) pairs: predict task i with the adapter saved after task t."""
    T = num_tasks
    if kind == "avgPerf":
        return [(T - 1, i) for i in range(T)]
    if kind == "bwt":
        if only is not None and not 0 <= only < T:
            raise InputError(f"--service_begin_id: {only} is out of range; this order has tasks 0..{T - 1}")
        return [(i, i) for i in range(T) if only is None or i == only]
    if kind == "matrix":
        return [(t, i) for t in range(T) for i in range(t + 1)]
    raise InputError(f"unknown prediction kind {kind!r}; expected one of {KINDS}")


def run_generation(*, kind, tasks, order_name, base_model, method, output_path, data_dir, make_predictor,
                   batch_size, suffix="_T5", fields=("id", "input", "output"), only=None):
    """Write every missing prediction file of this kind; finished files are skipped.

    Adapters and test files are all checked before the first model is loaded.
    """
    if batch_size < 1:
        raise InputError(f"--batch_size must be a positive integer, got {batch_size}")
    jobs = generation_jobs(kind, len(tasks), only)
    adapters = {t: adapter_dir(output_path, base_model, method, order_name, t, tasks[t]) for t, _ in jobs}
    for t, d in adapters.items():
        if not adapter_exists(d):
            raise InputError(f"the adapter after task {t} ({tasks[t]}) is missing at {d}; train it first")
    tests = {i: load_records(task_file(data_dir, "test", tasks[i], suffix), fields) for _, i in jobs}
    pred_dir = prediction_dir(output_path, base_model, method, order_name, kind)
    for t in sorted(adapters):
        todo = [(i, prediction_file(pred_dir, kind, t, i, tasks[i])) for tt, i in jobs if tt == t]
        todo = [(i, p) for i, p in todo if not os.path.isfile(p)]
        if not todo:
            continue
        predict = make_predictor(adapters[t])
        for i, path in todo:
            records = tests[i]
            write_predictions(records, predict, path, batch_size, desc=f"{kind} adapter {t} -> {i}-{tasks[i]}")
    return pred_dir


def scoring_records(data_dir, task, metric="accuracy"):
    """The test split's ids and gold outputs; the T5 and LLaMA files of a task hold the same ones."""
    path = task_file(data_dir, "test", task, "_T5")
    if not os.path.isfile(path):
        path = task_file(data_dir, "test", task, "")
    return check_task_records(path, load_records(path, ("id", "output")), metric)


def task_accuracy(pred_dir, kind, t, i, tasks, data_dir, metrics=None):
    """(score, examples) of task i's predictions with the adapter after task t; the score is the
    task's metric (accuracy unless ``metrics`` says rougeL)."""
    metric = (metrics or {}).get(tasks[i], "accuracy")
    path = prediction_file(pred_dir, kind, t, i, tasks[i])
    rows = read_predictions(path)
    check_complete(rows, scoring_records(data_dir, tasks[i], metric), path)
    return score(rows, metric), len(rows)


def evaluate_avgperf(pred_dir, tasks, data_dir, metrics=None):
    T = len(tasks)
    rows = []
    for i, task in enumerate(tasks):
        acc, n = task_accuracy(pred_dir, "avgPerf", T - 1, i, tasks, data_dir, metrics)
        rows.append({"task_id": i, "task": task, "metric": (metrics or {}).get(task, "accuracy"), "score": acc,
                     "examples": n})
    return rows, {"OP": overall_performance([r["score"] for r in rows])}


def evaluate_bwt(bwt_dir, avgperf_dir, tasks, data_dir, metrics=None):
    T = len(tasks)
    if T < 2:
        raise InputError("BWT needs an order of at least two tasks")
    rows = []
    for i, task in enumerate(tasks):
        a_ii, n = task_accuracy(bwt_dir, "bwt", i, i, tasks, data_dir, metrics) if i < T - 1 else (None, None)
        a_ti, _ = task_accuracy(avgperf_dir, "avgPerf", T - 1, i, tasks, data_dir, metrics)
        a_ii = a_ti if i == T - 1 else a_ii
        rows.append({"task_id": i, "task": task, "a_ii": a_ii, "a_Ti": a_ti, "a_Ti_minus_a_ii": a_ti - a_ii})
    return rows, {"BWT": backward_transfer([r["a_ii"] for r in rows], [r["a_Ti"] for r in rows]),
                  "OP": overall_performance([r["a_Ti"] for r in rows])}


def evaluate_matrix(matrix_dir, tasks, data_dir, metrics=None):
    T = len(tasks)
    R = [[task_accuracy(matrix_dir, "matrix", t, i, tasks, data_dir, metrics)[0] for i in range(t + 1)]
         for t in range(T)]
    rows = [{"after_task": t, **{f"{i}-{tasks[i]}": (R[t][i] if i <= t else "") for i in range(T)}}
            for t in range(T)]
    return R, rows, matrix_metrics(R)
