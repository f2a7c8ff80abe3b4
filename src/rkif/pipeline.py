"""The pipeline: every task of an order trained in sequence, then predictions and scores, for several
methods, with a summary across them (src/run_pipeline.py; the grid runs one sequence per call).

Finished tasks and prediction files are skipped, an unfinished task resumes from its newest complete
checkpoint, and one process at a time holds a run folder.
"""

import dataclasses
import fcntl
import inspect
import os
import sys

import torch

from .adapters import adapter_exists
from .backbones import get_backbone
from .task_files import read_json
from .errors import InputError
from .prediction_folders import free_accelerator_memory
from .folder_lock import hold_folder
from .generate import generate
from .generation_memory import memory_budget
from .methods import METHOD_NAMES, METHODS, get_method, prediction_kinds
from .metrics import shown, write_report
from .generation_precision import generation_numerics
from .plots import plot_matrices
from .recipes import DEFAULT_RECIPE, check_recipe
from .run_folders import adapter_dir, order_summary_name, prediction_dir, run_dir
from .scoring import evaluate, matrix_title
from .settings import BWTSettings, GenerationSettings, PipelineSettings, RunSettings, Settings, command, default
from .tasks import resolve_order
from .training import TRAIN


def run_pipeline(settings, train_flags):
    """settings: the pipeline's own flags as groups; train_flags: the others (training flags), for every task."""
    methods, backbone = checked_flags(settings, train_flags)
    run = settings.run
    recipe_name = run.recipe or DEFAULT_RECIPE
    check_recipe(recipe_name)
    order_name, tasks = resolve_order(run.dataset_id)
    common = dict(base_model=run.base_model, dataset_id=run.dataset_id, data_dir=run.data_dir,
                  output_path=run.output_path)
    named = dict(seed=run.seed, recipe=recipe_name)  # the run folders' suffixes
    matrix, train_only = settings.bwt.matrix, settings.pipeline.train_only
    summary = {}
    for method in methods:
        # one process per sequence (method x order x seed): a second one stops here, naming the holder
        with hold_folder(run_dir(run.output_path, run.base_model, method, order_name, run.seed, recipe_name),
                         "run folder"):
            train_sequence(TRAIN[backbone.name], method, order_name, tasks, common, named, train_flags,
                           cache_dir=run.cache_dir, resume=not settings.pipeline.no_resume)
            if not train_only:
                summary[method] = predict_and_score(
                    backbone, method, generation_settings(settings, backbone, train_flags, method, recipe_name),
                    matrix, common, named)
    if train_only:
        print(f"done: every task of order {order_name} has its adapter under {run.output_path}")
        return summary
    write_order_summary(summary, order_name, tasks, common, named, matrix)
    return summary


def generation_settings(settings, backbone, train_flags, method, recipe_name):
    """The generators' settings for one method's sequence, with what training used and generation must use
    too: the cutoff (for truncate_inputs and the count of longer test inputs; None: the recipe's) and the
    LLaMA prompt template."""
    used_in_training = {flag: train_flags.get(flag, default(backbone.settings, flag))
                        for flag in backbone.generation_flags}
    return Settings((dataclasses.replace(settings.run, method_name=method, recipe=recipe_name),
                     settings.generation, backbone.settings(**used_in_training)))


def checked_flags(settings, train_flags):
    """(the methods, the backbone), and every flag refused now if bad rather than after hours of training."""
    for flag in ("method_name", "task_id", "resume_from_checkpoint"):
        if flag in train_flags:
            raise InputError(f"--{flag}: the pipeline sets it for every task (methods: --methods; an unfinished "
                             "task resumes by itself unless --no_resume)")
    methods = settings.pipeline.methods
    methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in METHODS:
            raise InputError(f"--methods: unknown method {m!r}; expected a comma-separated subset of {METHOD_NAMES}")
    backbone = get_backbone(settings.pipeline.backbone)
    generation = settings.generation
    if not settings.pipeline.train_only:
        generation_numerics(generation.gen_precision, "cuda" if torch.cuda.is_available() else "cpu", backbone.name)
        if generation.generation_memory_gb < 0:
            memory_budget(generation.generation_memory_gb, "cpu")
    unknown = set(train_flags) - set(inspect.signature(TRAIN[backbone.name]).parameters)
    if unknown:
        raise InputError(f"unknown flag(s) {sorted(unknown)}: not a pipeline flag nor one of the {backbone.name} "
                         "training script's")
    return methods, backbone


def train_sequence(train, method, order_name, tasks, common, named, train_flags, cache_dir, resume):
    """Every task the method trains, in order; a task with its adapter is skipped, an unfinished one resumes."""
    for t in get_method(method).trained_task_ids(len(tasks)):
        folder = adapter_dir(common["output_path"], common["base_model"], method, order_name, t, tasks[t],
                             named["seed"], named["recipe"])
        if adapter_exists(folder):
            print(f"skip: order {order_name} task {t}-{tasks[t]} of {method} (adapter exists at {folder})")
            continue
        print(f"train: order {order_name} task {t}-{tasks[t]} of {method}", flush=True)
        train(method_name=method, task_id=t, cache_dir=cache_dir, **common, **named,
              resume_from_checkpoint="auto" if resume else None, **train_flags)
        free_accelerator_memory()  # the next task loads its own model in this process


def predict_and_score(backbone, method, generation, matrix, common, named):
    """The method's prediction files (generation: its generators' settings), then its scores: OP and BWT, or the
    matrix."""
    kinds = prediction_kinds(get_method(method), matrix)
    for kind in kinds:
        generate(backbone, kind, generation)
    if kinds == ("matrix",):
        return evaluate("matrix", method_name=method, **named, **common)
    # without an adapter per task (MTL) BWT and forgetting are not defined
    result = {**evaluate("avgPerf", method_name=method, **named, **common),
              **(evaluate("bwt", method_name=method, **named, **common) if "bwt" in kinds else {"BWT": None})}
    if matrix:
        result["forgetting"] = None
    return result


def write_order_summary(summary, order_name, tasks, common, named, matrix):
    """The methods side by side: summary_{order}.json/.csv (merged with other methods' earlier rows), the
    heatmaps with --matrix, and the table printed."""
    output_path, base_model, seed, recipe_name = (common["output_path"], common["base_model"], named["seed"],
                                                  named["recipe"])
    rows = [{"method": m, **{k: v for k, v in r.items() if k != "R"}} for m, r in summary.items()]
    name = order_summary_name(order_name, seed, recipe_name)
    prefix = os.path.join(output_path, f"summary_{name}")

    def panel_of(method):
        path = os.path.join(prediction_dir(output_path, base_model, method, order_name, "matrix", seed=seed,
                                           recipe=recipe_name), "metrics.json")
        if not os.path.isfile(path):
            return None
        result = read_json(path)
        return (result["R"], matrix_title(method, result)) if "R" in result else None

    merge_summary(prefix, rows, {"order": " ".join(tasks), "base_model": base_model, "recipe": recipe_name,
                                 "seed": seed}, heatmap=os.path.join(output_path, f"accuracy_matrices_{name}.png"),
                  panel_of=panel_of if matrix else None, tasks=tasks)
    print(f"\norder {order_name}: {' '.join(tasks)} (recipe {recipe_name}, seed {seed})")
    keys = [k for k in ("OP", "BWT", "forgetting") if k in rows[0]]
    print(f"{'method':10s}" + "".join(f"{k:>12s}" for k in keys))
    for r in rows:
        print(f"{r['method']:10s}" + "".join(f"{'' if r.get(k) is None else shown(r[k]):>12s}" for k in keys))
    print(f"written: {prefix}.json, {prefix}.csv")


def merge_summary(prefix, rows, meta, heatmap=None, panel_of=None, tasks=()):
    """Write this run's rows into {prefix}.json/.csv, keeping the rows of other methods that an earlier run
    of the same order, model, recipe and seed wrote (grid sequences run one method each, possibly at the
    same time: a lock file serialises them). heatmap: the PNG of every merged method with a matrix
    (panel_of(method) -> (R, title) or None), rebuilt from all of them."""
    with open(prefix + ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as e:  # a filesystem without flock: a concurrent sequence may drop this run's row
            print(f"warning: {prefix}.lock: no lock ({e}); the summary is merged without it", file=sys.stderr)
        earlier = []
        if os.path.isfile(prefix + ".json"):
            try:
                previous = read_json(prefix + ".json")
                if previous.get("base_model") == meta["base_model"]:
                    earlier = previous.get("tasks", [])
            except (InputError, AttributeError):
                earlier = []  # unreadable: rewritten from this run's rows
        ours = {r["method"] for r in rows}
        merged = [r for r in earlier if r.get("method") not in ours] + rows
        write_report(prefix, merged, meta)
        panels = [p for p in (panel_of(r["method"]) for r in merged) if p] if panel_of else []
        if heatmap and panels:
            plot_matrices(panels, tasks, heatmap + ".tmp.png")
            os.replace(heatmap + ".tmp.png", heatmap)
    return merged


run_order = command(
    run_pipeline,
    (PipelineSettings, (BWTSettings, ["matrix"]),
     (RunSettings, ["base_model", "dataset_id", "data_dir", "output_path", "cache_dir", "seed", "recipe"]),
     (GenerationSettings, ["gen_batch_size", "gen_precision", "truncate_inputs", "max_length", "max_new_tokens",
                          "generation_memory_gb"])),
    name="run_order", more_flags=True, choices={"methods": METHOD_NAMES},
    doc="Train every task of an order for each method, generate, score, and summarise the methods side by side. "
        "The gen_ flags, truncate_inputs and the lengths apply to generation; any other flag (--precision "
        "included) goes to the training script.")
PIPELINE_FLAGS = tuple(p for p in inspect.signature(run_order).parameters if p != "flags")
