"""The whole job for one order: train every task, generate predictions, compute OP and BWT.

    python src/run_pipeline.py --base_model /models/t5-large --dataset_id 4 --methods RKIF,SeqLoRA,Replay
    python src/run_pipeline.py ... --matrix          # also every R[t][i]: forgetting and heatmaps
    python src/run_pipeline.py --backbone llama --base_model /models/Llama-2-7b-chat-hf --dataset_id 4
    python src/run_pipeline.py ... --methods OLoRA,IncLoRA --recipe olora   # as the O-LoRA release trained them

Resumable at any point: tasks whose adapter exists and prediction files that are complete
are skipped; an unfinished task resumes from its newest complete checkpoint (--no_resume: it
restarts at step 0); a half-written prediction file is continued. Flags not listed here (e.g.
--num_epochs, --learning_rate, --memory_data_ratio) go to the training script's train()
(finetune_KIF_t5lora.py, or finetune_KIF_llama.py with --backbone llama).
--recipe (rkif, the default, or olora; rkif.recipes) sets the training protocol of every task; its
runs live in their own folders (suffix _recipe-{name}), as other seeds do (_seed{n}).
Writes {output_path}/summary_dataset_id_{id}[_recipe-{name}][_seed{n}].json/.csv, and with --matrix a
side-by-side heatmap {output_path}/accuracy_matrices_dataset_id_{id}[...].png.
"""

import functools
import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import finetune_KIF_llama  # noqa: E402
import finetune_KIF_t5lora  # noqa: E402
from rkif.adapters import adapter_exists  # noqa: E402
from rkif.cli import evaluate, generate_llama, generate_t5, matrix_title  # noqa: E402
from rkif.evaluation import prediction_dir  # noqa: E402
from rkif.continual import DEFAULT_SEED, adapter_dir, run_dir, run_suffix  # noqa: E402
from rkif.folder_lock import hold_folder  # noqa: E402
from rkif.data import read_json  # noqa: E402
from rkif.errors import InputError  # noqa: E402
from rkif.flags import run  # noqa: E402
from rkif.methods import METHOD_NAMES, METHODS  # noqa: E402
from rkif.metrics import plot_matrices, write_report  # noqa: E402
from rkif.recipes import DEFAULT_RECIPE, check_recipe  # noqa: E402
from rkif.tasks import resolve_order  # noqa: E402


def run_order(base_model="", dataset_id=4, methods="RKIF", backbone="t5", data_dir="data/long_sequence",
              output_path="output", matrix=False, gen_batch_size=32, max_length=128, max_new_tokens=128,
              precision="auto", cache_dir=None, no_resume=False, truncate_inputs=False, **train_flags):
    """backbone: t5 (finetune_KIF_t5lora) or llama (finetune_KIF_llama). max_length caps T5 generation,
    max_new_tokens LLaMA's; precision and truncate_inputs (cut test inputs at the training cutoff rather
    than feed them whole) apply to generation. An unfinished task resumes from its newest
    complete checkpoint unless no_resume (then it restarts at step 0). Other flags go to the training
    script."""
    methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in METHODS:
            raise InputError(f"--methods: unknown method {m!r}; expected a comma-separated subset of {METHOD_NAMES}")
    if backbone not in ("t5", "llama"):
        raise InputError(f"--backbone must be t5 or llama, got {backbone!r}")
    train = finetune_KIF_t5lora.train if backbone == "t5" else finetune_KIF_llama.train
    unknown = set(train_flags) - set(inspect.signature(train).parameters)
    if unknown:
        raise InputError(f"unknown flag(s) {sorted(unknown)}: not a pipeline flag nor one of the {backbone} "
                         "training script's")
    recipe_name = train_flags.get("recipe") or DEFAULT_RECIPE
    check_recipe(recipe_name)
    # the training cutoff (for truncate_inputs and the count of longer test inputs): the flag's, else the
    # recipe's, resolved by the generator
    if backbone == "t5":
        generator = functools.partial(generate_t5, max_input_length=train_flags.get("max_input_length"),
                                      max_length=max_length, truncate_inputs=truncate_inputs)
    else:
        generator = functools.partial(generate_llama, cutoff_len=train_flags.get("cutoff_len"),
                                      max_new_tokens=max_new_tokens, truncate_inputs=truncate_inputs)
    order_name, tasks = resolve_order(dataset_id)
    seed = train_flags.get("seed", DEFAULT_SEED)
    common = dict(base_model=base_model, dataset_id=dataset_id, data_dir=data_dir, output_path=output_path)
    named = dict(seed=seed, recipe=recipe_name)  # the run folders' suffixes
    summary = {}
    for method in methods:
        # one process per sequence (method x order x seed): a second one stops here, naming the holder
        with hold_folder(run_dir(output_path, base_model, method, order_name, seed, recipe_name), "run folder"):
            sequential = METHODS[method].sequential
            for t, task in enumerate(tasks):
                if not sequential and t < len(tasks) - 1:
                    continue  # trained once, on all tasks, at the last task id
                if adapter_exists(adapter_dir(output_path, base_model, method, order_name, t, task, seed, recipe_name)):
                    print(f"skip training: {method} task {t}-{task} (adapter exists)")
                    continue
                train(method_name=method, task_id=t, cache_dir=cache_dir, **common,
                      **{"resume_from_checkpoint": None if no_resume else "auto", **train_flags})
            kinds = ("matrix",) if matrix else ("avgPerf", "bwt")
            for kind in kinds if sequential else ("avgPerf",):
                generator(kind, method_name=method, batch_size=gen_batch_size, precision=precision, cache_dir=cache_dir,
                          **named, **common)
            if not sequential:  # OP only: BWT and forgetting are not defined without an adapter per task
                result = {**evaluate("avgPerf", method_name=method, **named, **common), "BWT": None}
                if matrix:
                    result["forgetting"] = None
            elif matrix:
                result = evaluate("matrix", method_name=method, **named, **common)
            else:
                result = {**evaluate("avgPerf", method_name=method, **named, **common),
                          **evaluate("bwt", method_name=method, **named, **common)}
            summary[method] = result

    rows = [{"method": m, **{k: v for k, v in r.items() if k != "R"}} for m, r in summary.items()]
    name = f"dataset_id_{order_name}{run_suffix(seed, recipe_name)}"
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
        print(f"{r['method']:10s}" + "".join(f"{'':>12s}" if r.get(k) is None else f"{r[k]:12.4f}" for k in keys))
    print(f"written: {prefix}.json, {prefix}.csv")
    return summary


def merge_summary(prefix, rows, meta, heatmap=None, panel_of=None, tasks=()):
    """Write this run's rows into {prefix}.json/.csv, keeping the rows of other methods that an earlier run
    of the same order, model, recipe and seed wrote (grid sequences run one method each, possibly at the
    same time: a lock file serialises them). heatmap: the PNG of every merged method with a matrix
    (panel_of(method) -> (R, title) or None), rebuilt from all of them."""
    import fcntl

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


PIPELINE_FLAGS = set(inspect.signature(run_order).parameters) - {"train_flags"}
TRAINING_FLAGS = set(inspect.signature(finetune_KIF_t5lora.train).parameters) | set(
    inspect.signature(finetune_KIF_llama.train).parameters)


def main(argv=None):
    run(run_order, argv, extra_flags=TRAINING_FLAGS)


if __name__ == "__main__":
    main()
