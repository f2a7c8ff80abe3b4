"""Scoring a run's predictions: OP (avgPerf), BWT (bwt) or the whole accuracy matrix, printed as a table and
written beside the predictions as metrics.json / metrics.csv (and the matrix as a heatmap).

    score = scoring_command("avgPerf")   # what src/eval_avgPerf.py runs
"""

import os

from .errors import InputError
from .prediction_folders import evaluate_avgperf, evaluate_bwt, evaluate_matrix, prediction_dir, read_generation_info
from .methods import METHOD_NAMES, check_kind
from .metrics import shown, write_report
from .plots import plot_matrices
from .settings import BWTSettings, RunSettings, ScoringSettings, command
from .tasks import resolve_order, task_metrics


def scoring_command(kind):
    groups = [(RunSettings, ["base_model", "dataset_id", "method_name", "data_dir", "output_path", "seed",
                             "recipe"])]
    if kind == "avgPerf":
        groups.append((ScoringSettings, ["model_name", "pred_dir"]))
        doc = "OP of an order: mean test accuracy over all tasks of the adapter after the last task."
    else:
        groups += [ScoringSettings, (BWTSettings, ["matrix"])]
        doc = "BWT of an order (with --matrix: the whole accuracy matrix, BWT and forgetting)."

    def body(settings):
        run, scoring = settings.run, settings.scoring
        pred_dir, avgperf_dir = scoring.pred_dir, scoring.avgperf_dir
        if scoring.test_data_name and not pred_dir:
            pred_dir = os.path.join(run.output_path, scoring.test_data_name)
        if scoring.test_data_name2 and not avgperf_dir:
            avgperf_dir = os.path.join(run.output_path, scoring.test_data_name2)
        return evaluate("matrix" if "bwt" in settings and settings.bwt.matrix else kind, base_model=run.base_model,
                        dataset_id=run.dataset_id, method_name=run.method_name, data_dir=run.data_dir,
                        output_path=run.output_path, pred_dir=pred_dir, avgperf_dir=avgperf_dir,
                        model_name=scoring.model_name, seed=run.seed, recipe=run.recipe)

    return command(body, groups, name=f"eval_{kind}", doc=doc, choices={"method_name": METHOD_NAMES})


def evaluate(kind, *, base_model, dataset_id, method_name, data_dir, output_path, pred_dir=None,
             avgperf_dir=None, model_name=None, quiet=False, seed=RunSettings.seed, recipe=RunSettings.recipe):
    """Score one kind of predictions; writes metrics.json/.csv (and the heatmap for the matrix) beside them.

    Folders: pred_dir (and avgperf_dir for bwt) as given, else named from model_name (the released
    eval scripts' --model_name, e.g. t5-largelora) or from base_model, under output_path.
    """
    order_name, tasks = resolve_order(dataset_id)
    metrics = task_metrics(dataset_id)

    def folder(k):
        if not model_name:
            check_kind(method_name, kind)
            if not base_model:  # it only names the folders
                raise InputError("--base_model: required (it names the run folders; or give --model_name or "
                                 "--pred_dir)")
        return prediction_dir(output_path, base_model, method_name, order_name, k, model_name, seed, recipe)

    pred_dir = pred_dir or folder(kind)
    if kind == "avgPerf":
        rows, summary = evaluate_avgperf(pred_dir, tasks, data_dir, metrics)
    elif kind == "bwt":
        avgperf_dir = avgperf_dir or folder("avgPerf")
        rows, summary = evaluate_bwt(pred_dir, avgperf_dir, tasks, data_dir, metrics)
    else:
        R, rows, summary = evaluate_matrix(pred_dir, tasks, data_dir, metrics)
        summary["R"] = R
        plot_matrices([(R, matrix_title(os.path.basename(pred_dir), summary))], tasks,
                      os.path.join(pred_dir, "accuracy_matrix.png"))
    long_inputs = {name: e["over_training_cutoff"] for name, e in read_generation_info(pred_dir).items()}
    if long_inputs:
        summary["test_inputs_over_training_cutoff"] = long_inputs
        if any(long_inputs.values()) and not quiet:
            print("test inputs longer than the training cutoff: "
                  + ", ".join(f"{k} {v}" for k, v in long_inputs.items() if v))
    write_report(os.path.join(pred_dir, "metrics"), rows, summary)
    if not quiet:
        _table(rows, {k: v for k, v in summary.items() if k != "R"}, f"{kind}: {pred_dir}")
    return summary


def _table(rows, summary, title):
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {k: max(len(k), *(len(fmt(r[k])) for r in rows)) for k in keys}
    lines = [title, "  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(fmt(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    lines += [f"{k}: {fmt(v)}" for k, v in summary.items()]
    print("\n".join(lines))


def matrix_title(name, summary):
    extra = (f"  BWT {shown(summary['BWT'], 3)}  forgetting {shown(summary['forgetting'], 3)}"
             if "BWT" in summary else "")
    return f"{name}\nOP {shown(summary['OP'], 3)}{extra}"
