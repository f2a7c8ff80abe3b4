"""Which adapter predicts which test split, where the files go, and the scores read back from them.

Kinds of prediction folder, beside the run folder `{model}lora_{method}_dataset_id_{id}`:
- avgPerf: the final adapter on every task's test split          -> `_avgPerf/{i}-{task}.jsonl`
  (folders written by the released generators, `{i}-{task}_result.txt`, are read as they are)
- bwt:     the adapter saved after task i on task i's test split   -> `_bwt/{i}-{task}.jsonl`
- matrix:  the adapter after task t on every task i <= t           -> `_matrix/after_{t}/{i}-{task}.jsonl`
Backbones supply only `make_predictor(adapter_dir) -> predict(records) -> [str]`.
"""

import gc
import json
import os
import sys

import torch

from .adapters import adapter_exists
from .task_files import check_task_records, load_records, task_file
from .errors import InputError, write_failed
from .folder_lock import hold_folder
from .prediction_files import PARTIAL, write_predictions
from .metrics import backward_transfer, matrix_metrics, missed_by_released_rule, overall_performance, score
from .predictions import RELEASED, check_complete, check_released_order, read_predictions
from .run_folders import DEFAULT_RECIPE, DEFAULT_SEED, adapter_dir, prediction_dir

KINDS = ("avgPerf", "bwt", "matrix")


# Names a prediction file may have, in order of preference: ours, the released generators', older runs'.
PREDICTION_NAMES = ("{i}-{task}.jsonl", "{i}-{task}_result.txt", "{i}-{task}.txt")


def prediction_file(pred_dir, kind, t, i, task):
    """The first of PREDICTION_NAMES that exists, else the .jsonl path (what generation writes)."""
    folder = os.path.join(pred_dir, f"after_{t}") if kind == "matrix" else pred_dir
    paths = [os.path.join(folder, name.format(i=i, task=task)) for name in PREDICTION_NAMES]
    return next((p for p in paths if os.path.isfile(p)), paths[0])


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
                   batch_size, suffix="_T5", fields=("id", "input", "output"), only=None, seed=DEFAULT_SEED,
                   recipe=DEFAULT_RECIPE):
    """Write every missing prediction file of this kind; finished files are skipped.

    Adapters and test files are all checked before the first model is loaded.
    """
    if batch_size < 1:
        raise InputError(f"--gen_batch_size must be a positive integer, got {batch_size}")
    jobs = generation_jobs(kind, len(tasks), only)
    adapters = {t: adapter_dir(output_path, base_model, method, order_name, t, tasks[t], seed, recipe)
                for t, _ in jobs}
    for t, d in adapters.items():
        if not adapter_exists(d):
            raise InputError(f"the adapter after task {t} ({tasks[t]}) is missing at {d}; train it first")
    tests = {i: load_records(task_file(data_dir, "test", tasks[i], suffix), fields) for _, i in jobs}
    pred_dir = prediction_dir(output_path, base_model, method, order_name, kind, seed=seed, recipe=recipe)
    with hold_folder(pred_dir, "prediction folder"):
        for t in sorted(adapters):
            todo = [(i, prediction_file(pred_dir, kind, t, i, tasks[i])) for tt, i in jobs if tt == t]
            todo = [(i, p) for i, p in todo if not os.path.isfile(p)]
            if not todo:
                continue
            predict = None
            free_accelerator_memory()  # the previous adapter's model goes before the next one loads
            predict = make_predictor(adapters[t])
            for i, path in todo:
                try:
                    records = tests[i]
                    lengths = predict.lengths(records) if hasattr(predict, "lengths") else None
                    if lengths is not None:
                        record_long_inputs(pred_dir, os.path.relpath(path, pred_dir), lengths,
                                           predict.training_cutoff)
                    # batches by characters, as before: near-ties of a small model can flip with the
                    # padding of another batch composition, and the demo's figures are measured this way
                    write_predictions(records, predict, path, batch_size, desc=f"{kind} adapter {t} -> {i}-{tasks[i]}",
                                      fits=getattr(predict, "fits", None), token_lengths=lengths)
                except OSError as e:
                    raise write_failed(e, pred_dir, f"Finished prediction files are kept, and so are the finished "
                                       f"lines of {path}{PARTIAL}; a rerun continues from them") from None
    return pred_dir


def free_accelerator_memory():
    """Collect unreachable models now and hand their GPU memory back, so that two 7B models are never
    resident at once."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


GENERATION_INFO = "generation_info.json"


def record_long_inputs(pred_dir, name, lengths, cutoff):
    """Count (and print) the test inputs longer than the training cutoff; kept per prediction file in
    {pred_dir}/generation_info.json, which evaluation copies into metrics.json."""
    over = sum(n > cutoff for n in lengths)
    entry = {"examples": len(lengths), "over_training_cutoff": over, "training_cutoff": cutoff,
             "longest_input_tokens": max(lengths, default=0)}
    if over:
        print(f"{name}: {over} of {len(lengths)} test inputs are longer than the training cutoff ({cutoff} "
              f"tokens; the longest has {entry['longest_input_tokens']}); they are fed whole unless "
              "--truncate_inputs")
    path = os.path.join(pred_dir, GENERATION_INFO)
    info = read_generation_info(pred_dir)
    info[os.path.splitext(name)[0]] = entry
    os.makedirs(pred_dir, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def read_generation_info(pred_dir):
    path = os.path.join(pred_dir, GENERATION_INFO)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    if not os.path.isfile(path):
        names = " or ".join(n.format(i=i, task=tasks[i]) for n in PREDICTION_NAMES)
        raise InputError(f"{path}: prediction file not found (looked for {names}); run the generation step first")
    rows = read_predictions(path)
    split = scoring_records(data_dir, tasks[i], metric)
    check_complete(rows, split, path)
    if any(r.get("format") == RELEASED for r in rows):
        check_released_order(rows, split, path)
    gold = {r["id"]: r["output"] for r in split}  # scored against the test split, as released
    rows = [{**r, "gold": gold[r["id"]]} for r in rows]
    missed = missed_by_released_rule(rows) if metric == "accuracy" else 0
    if missed:
        print(f"warning: {path}: {missed} predictions match the gold only after stripping whitespace; the released "
              "rule, used for this released-format file, counts them wrong", file=sys.stderr)
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
