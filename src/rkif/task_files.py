"""Reading and checking task files: {data_dir}/{split}/{task}_T5.json (seq2seq) or {task}.json (causal LM)."""

import json
import os
import re
import sys
from collections import Counter

from .errors import InputError

OPTION_RE = re.compile(r"Option: (.*?)\.\n")

T5_FIELDS = ("input", "output")


def task_file(data_dir, split, task, suffix="_T5"):
    return os.path.join(data_dir, split, f"{task}{suffix}.json")


def read_json(path):
    """The parsed file; malformed JSON is an InputError naming the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def load_records(path, fields=T5_FIELDS):
    """The list of records in ``path``, each checked to hold every field in ``fields`` as a string."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: data file not found")
    records = read_json(path)
    if not isinstance(records, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise InputError(f"{path}: the task file holds no records")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise InputError(f"{path}: record {i} is {type(r).__name__}, expected an object")
        for field in fields:
            if field not in r:
                raise InputError(f"{path}: record {i} (id {r.get('id', '?')}) has no '{field}' field")
            if not isinstance(r[field], str):
                raise InputError(f"{path}: record {i} (id {r.get('id', '?')}) field '{field}' must be a string")
    return records


def option_list(record):
    """The labels of "Option: a, b, c." in a record's instruction (or T5 input); None when absent."""
    found = OPTION_RE.search(record.get("instruction") or record.get("input", ""))
    return found.group(1).split(", ") if found else None


def duplicate_ids(records):
    counts = Counter(r.get("id") for r in records if "id" in r)
    return sorted(i for i, c in counts.items() if c > 1)


def empty_outputs(records):
    return [r.get("id", i) for i, r in enumerate(records) if not r["output"].strip()]


def outside_options(records):
    """Records whose output is not in their own option list: [(id, output, options)]."""
    bad = []
    for i, r in enumerate(records):
        options = option_list(r)
        if options is not None and r["output"] not in options:
            bad.append((r.get("id", i), r["output"], options))
    return bad


def check_task_records(path, records, metric="accuracy", strict_options=False):
    """The checks training and evaluation run on every file they read (validate runs them too).

    Duplicate ids and empty outputs are errors. An output outside the option list is an error only
    when ``strict_options``; otherwise a warning, because the released benchmark itself has a few
    (6 MNLI dev records whose gold label is "-") and training on it must not be refused.
    """
    dupes = duplicate_ids(records)
    if dupes:
        raise InputError(f"{path}: {len(dupes)} duplicate ids, e.g. {dupes[:3]}")
    empty = empty_outputs(records)
    if empty:
        raise InputError(f"{path}: {len(empty)} records with an empty output, e.g. ids {empty[:3]}")
    if metric == "accuracy":
        bad = outside_options(records)
        if bad:
            ident, output, options = bad[0]
            message = (f"{path}: {len(bad)} outputs outside the option list, e.g. id {ident}: "
                       f"{output!r} not in {options}")
            if strict_options:
                raise InputError(message)
            print(f"warning: {message}", file=sys.stderr)
    return records
