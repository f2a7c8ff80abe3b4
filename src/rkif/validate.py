"""Checking a whole data folder: every {split}/{task}_T5.json and {split}/{task}.json.

Classes of problem, checked in this order over all files; the first class with a problem is
reported (every file it concerns, a few examples each) and nothing after it:
  1. schema: readable JSON list of records with string id/input/output (+ instruction for LLaMA files)
  2. duplicate ids within a file
  3. empty outputs
  4. outputs outside the option list ("Option: a, b.") of classification (accuracy) tasks
  5. T5/LLaMA pairs: same ids in the same order, T5 input == instruction + input, same outputs
"""

import glob
import os
from collections import Counter

from .task_files import duplicate_ids, empty_outputs, load_records, outside_options
from .errors import InputError

SPLITS = ("train", "dev", "test")
T5_FIELDS = ("id", "input", "output")
LLAMA_FIELDS = ("id", "instruction", "input", "output")


def data_files(data_dir):
    """{(split, task, kind): path}, kind "t5" or "llama"."""
    files = {}
    for split in SPLITS:
        for path in sorted(glob.glob(os.path.join(data_dir, split, "*.json"))):
            name = os.path.basename(path)[: -len(".json")]
            kind = "t5" if name.endswith("_T5") else "llama"
            files[(split, name[:-3] if kind == "t5" else name, kind)] = path
    if not files:
        raise InputError(f"{data_dir}: no {{train,dev,test}}/*.json files found")
    return files


def _fail(title, problems):
    shown = "\n".join(f"  {p}" for p in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise InputError(f"{title} ({len(problems)} files):\n{shown}{more}")


def validate_folder(data_dir, metrics=None):
    """Raise InputError on the first class of problem; return {(split, task, kind): records} when clean.

    metrics: {task: "accuracy" | "rougeL"}; option lists are checked for accuracy tasks only.
    """
    metrics = metrics or {}
    files = data_files(data_dir)
    records, problems = {}, []
    for key, path in files.items():
        try:
            records[key] = load_records(path, T5_FIELDS if key[2] == "t5" else LLAMA_FIELDS)
        except InputError as e:
            problems.append(str(e))
    if problems:
        _fail("schema problems", problems)

    checks = [
        ("duplicate ids", lambda recs, task: [f"ids {duplicate_ids(recs)[:3]}"] if duplicate_ids(recs) else []),
        ("empty outputs", lambda recs, task: [f"ids {empty_outputs(recs)[:3]}"] if empty_outputs(recs) else []),
        ("outputs outside the option list", lambda recs, task: [
            f"{len(bad)} records, e.g. id {bad[0][0]}: {bad[0][1]!r} not in {bad[0][2]}"]
            if metrics.get(task, "accuracy") == "accuracy" and (bad := outside_options(recs)) else []),
    ]
    for title, check in checks:
        problems = [f"{files[key]}: {msg}" for key, recs in records.items() for msg in check(recs, key[1])]
        if problems:
            _fail(title, problems)

    problems = []
    for (split, task, kind), t5 in records.items():
        if kind != "t5" or (split, task, "llama") not in records:
            continue
        llama = records[(split, task, "llama")]
        where = f"{files[(split, task, 't5')]} vs {os.path.basename(files[(split, task, 'llama')])}"
        if [r["id"] for r in t5] != [r["id"] for r in llama]:
            problems.append(f"{where}: ids differ ({len(t5)} vs {len(llama)} records)")
            continue
        for a, b in zip(t5, llama):
            if a["input"] != b["instruction"] + b["input"] or a["output"] != b["output"]:
                problems.append(f"{where}: record {a['id']} differs (T5 input must be instruction + input, "
                                "outputs equal)")
                break
    if problems:
        _fail("T5/LLaMA pair mismatches", problems)
    return records


def summary_lines(records):
    """Counts per split and the label distribution per task (from the T5 file, else the LLaMA one)."""
    tasks = sorted({task for _, task, _ in records})
    lines = [f"{'task':16s}" + "".join(f"{s:>8s}" for s in SPLITS) + "  files"]
    for task in tasks:
        kinds = sorted({k for (_, t, k) in records if t == task})
        kind = "t5" if "t5" in kinds else "llama"
        counts = [len(records.get((s, task, kind), [])) for s in SPLITS]
        lines.append(f"{task:16s}" + "".join(f"{c:8d}" for c in counts) + "  " + "+".join(kinds))
    lines.append("label distribution (train):")
    for task in tasks:
        recs = records.get(("train", task, "t5")) or records.get(("train", task, "llama")) or []
        dist = Counter(r["output"] for r in recs)
        top = ", ".join(f"{label}: {n}" for label, n in dist.most_common(12))
        more = f", ... ({len(dist)} distinct)" if len(dist) > 12 else ""
        lines.append(f"  {task}: {top}{more}")
    return lines
