"""Shared bodies of the T5 generation and evaluation scripts (the scripts only parse flags)."""

import os

from .errors import InputError
from .flags import check_base_model
from .evaluation import (evaluate_avgperf, evaluate_bwt, evaluate_matrix, prediction_dir, read_generation_info,
                         run_generation)
from .methods import get_method
from .metrics import plot_matrices, write_report
from .recipes import check_recipe, recipe_values
from .tasks import resolve_order, task_metrics


def _check(method_name, base_model, model_needed=True, kind="avgPerf"):
    method = get_method(method_name)
    if kind != "avgPerf" and not method.has_bwt:
        raise InputError(f"--method_name {method_name}: trained once on all tasks, it has no adapter after each "
                         f"task, so {kind} (BWT, forgetting) is not defined; use the avgPerf (OP) scripts")
    if model_needed:
        check_base_model(base_model)
    elif not base_model:  # it only names the folders
        raise InputError("--base_model: required (it names the run folders; or give --model_name or --pred_dir)")


def generate(kind, *, make_predictor, base_model, dataset_id, method_name, data_dir, output_path, batch_size,
             service_begin_id=None, suffix="_T5", fields=("id", "input", "output"), seed=42, recipe="rkif"):
    _check(method_name, base_model, kind=kind)
    order_name, tasks = resolve_order(dataset_id)
    only = None if service_begin_id is None or service_begin_id < 0 else int(service_begin_id)
    pred_dir = run_generation(
        kind=kind, tasks=tasks, order_name=order_name, base_model=base_model, method=method_name,
        output_path=output_path, data_dir=data_dir, batch_size=batch_size, only=only, suffix=suffix, fields=fields,
        make_predictor=make_predictor, seed=seed, recipe=recipe)
    print(f"{kind} predictions in {pred_dir}")
    return pred_dir


def training_cutoff(flag, value, recipe, backbone):
    """The training cutoff the test inputs are compared with (and cut at, with --truncate_inputs): the flag's
    value, else the recipe's (rkif: T5 1024, LLaMA 512; olora: 512)."""
    check_recipe(recipe)
    return value if value is not None else recipe_values(recipe, backbone)[flag]


def generate_t5(kind, *, base_model, max_input_length=None, max_length=128, precision="auto", cache_dir=None,
                truncate_inputs=False, **flags):
    from .seq2seq import seq2seq_predictor_factory

    max_input_length = training_cutoff("max_input_length", max_input_length, flags.get("recipe", "rkif"), "t5")
    return generate(kind, base_model=base_model, **flags, make_predictor=seq2seq_predictor_factory(
        base_model, precision, cache_dir, max_input_length, max_length, truncate_inputs))


def generate_llama(kind, *, base_model, cutoff_len=None, max_new_tokens=128, precision="auto", cache_dir=None,
                   truncate_inputs=False, **flags):
    from .causal import causal_predictor_factory

    cutoff_len = training_cutoff("cutoff_len", cutoff_len, flags.get("recipe", "rkif"), "llama")
    return generate(kind, base_model=base_model, **flags, suffix="", fields=("id", "instruction", "input", "output"),
                    make_predictor=causal_predictor_factory(base_model, precision, cache_dir, cutoff_len,
                                                            max_new_tokens, truncate_inputs))


def _table(rows, summary, title):
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {k: max(len(k), *(len(fmt(r[k])) for r in rows)) for k in keys}
    lines = [title, "  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(fmt(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    lines += [f"{k}: {fmt(v)}" for k, v in summary.items()]
    print("\n".join(lines))


def matrix_title(name, summary):
    extra = f"  BWT {summary['BWT']:.3f}  forgetting {summary['forgetting']:.3f}" if "BWT" in summary else ""
    return f"{name}\nOP {summary['OP']:.3f}{extra}"


def evaluate(kind, *, base_model, dataset_id, method_name, data_dir, output_path, pred_dir=None,
             avgperf_dir=None, model_name=None, quiet=False, seed=42, recipe="rkif"):
    """Score one kind of predictions; writes metrics.json/.csv (and the heatmap for the matrix) beside them.

    Folders: pred_dir (and avgperf_dir for bwt) as given, else named from model_name (the released
    eval scripts' --model_name, e.g. t5-largelora) or from base_model, under output_path.
    """
    order_name, tasks = resolve_order(dataset_id)
    metrics = task_metrics(dataset_id)

    def folder(k):
        if not model_name:
            _check(method_name, base_model, model_needed=False, kind=kind)
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
