"""Reading and checking task files: {data_dir}/{split}/{task}_T5.json (seq2seq) or {task}.json (causal LM)."""

import json
import os

from .errors import InputError

T5_FIELDS = ("input", "output")


def task_file(data_dir, split, task, suffix="_T5"):
    return os.path.join(data_dir, split, f"{task}{suffix}.json")


def load_records(path, fields=T5_FIELDS):
    """The list of records in ``path``, each checked to hold every field in ``fields`` as a string."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: data file not found")
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
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
