"""Building the benchmark files ({split}/{task}_T5.json and {split}/{task}.json) from raw task folders.

Two raw layouts are read, per task folder holding train.json, dev.json and test.json:
  (a) lists of {"sentence", "label"}, plus labels.json (the option list, in order);
  (b) {"Instances": [{"input", "output"}]} objects (labels.json optional: else the outputs in
      order of first appearance).
Per task: seeded shuffle (42) of each split, train capped at 1000, dev at 500, test whole,
ids {RawTaskName}_{n}; files named by the lower-cased task name. The instruction is the task
type's question, "Choose one from the option.", and "Option: <labels joined by ', '>.", as in
the Long Sequence benchmark files; the example ends in "\\nAnswer:".
"""

import json
import os
import random

from .task_files import read_json
from .errors import InputError
from .settings import RunSettings

SPLITS = ("train", "dev", "test")
CAPS = {"train": 1000, "dev": 500, "test": None}
QUESTIONS = {
    "TC": "What is the topic of the following paragraph?",
    "SC": "What is the sentiment of the following paragraph?",
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"?',
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning?',
    "BoolQA": "According to the following passage, is the question true or false?",
    "MultiRC": "According to the following passage and question, is the candidate answer true or false?",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense in both sentence?",
}
TASK_TYPES = {
    "agnews": "TC", "dbpedia": "TC", "yahoo": "TC",
    "amazon": "SC", "yelp": "SC", "imdb": "SC", "sst-2": "SC",
    "mnli": "NLI", "cb": "NLI", "rte": "NLI",
    "qqp": "QQP", "boolqa": "BoolQA", "copa": "BoolQA", "multirc": "MultiRC", "wic": "WiC",
}


def instruction(task_type, labels):
    return f"{QUESTIONS[task_type]} Choose one from the option. Option: {', '.join(labels)}.\n"


def read_raw_task(task_dir):
    """({split: [(text, label)]}, labels) from a raw task folder of either layout."""
    labels_path = os.path.join(task_dir, "labels.json")
    labels = read_json(labels_path) if os.path.isfile(labels_path) else None
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise InputError(f"{labels_path}: expected a JSON list of label strings")
    splits, seen = {}, []
    for split in SPLITS:
        path = os.path.join(task_dir, f"{split}.json")
        if not os.path.isfile(path):
            raise InputError(f"{path}: raw split file not found")
        data = read_json(path)
        if isinstance(data, dict) and "Instances" in data:  # layout (b)
            rows, keys = data["Instances"], ("input", "output")
        elif isinstance(data, list):  # layout (a)
            if labels is None:
                raise InputError(f"{labels_path}: required beside sentence/label files")
            rows, keys = data, ("sentence", "label")
        else:
            raise InputError(f"{path}: expected a list of {{sentence, label}} or an object with 'Instances'")
        examples = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or any(k not in row for k in keys):
                raise InputError(f"{path}: example {i} lacks one of the fields {keys}")
            text, label = row[keys[0]], row[keys[1]]
            if isinstance(label, list):  # some layout (b) files list reference outputs
                label = label[0] if label else ""
            if isinstance(label, int) and labels is not None and 0 <= label < len(labels):
                label = labels[label]
            if not isinstance(text, str) or not isinstance(label, str):
                raise InputError(f"{path}: example {i}: {keys[0]} and {keys[1]} must be strings")
            examples.append((text, label))
            if label not in seen:
                seen.append(label)
        splits[split] = examples
    return splits, labels if labels is not None else seen


def convert_task(task_dir, raw_name, task_type, seed=RunSettings.seed):
    """{split: (t5_records, llama_records)} for one raw task folder."""
    if task_type not in QUESTIONS:
        raise InputError(f"{task_dir}: unknown task type {task_type!r}; expected one of {sorted(QUESTIONS)}")
    splits, labels = read_raw_task(task_dir)
    instr = instruction(task_type, labels)
    out = {}
    for split in SPLITS:
        examples = list(splits[split])
        random.Random(seed).shuffle(examples)
        if CAPS[split] is not None:
            examples = examples[: CAPS[split]]
        t5, llama = [], []
        for n, (text, label) in enumerate(examples):
            ident, body = f"{raw_name}_{n}", text + "\nAnswer:"
            t5.append({"id": ident, "input": instr + body, "output": label})
            llama.append({"id": ident, "instruction": instr, "input": body, "output": label})
        out[split] = (t5, llama)
    return out


def find_raw_tasks(raw_dir, types=None):
    """[(task_dir, raw_name, task_type)] for every folder under raw_dir holding a train.json.

    The type comes from ``types`` ({task name: type}), the built-in table of the 15 tasks, or the
    parent folder's name when it is a type (raw benchmarks are often laid out as TYPE/Task/).
    """
    types = {k.lower(): v for k, v in (types or {}).items()}
    found = []
    for folder, _, files in sorted(os.walk(raw_dir)):
        if "train.json" not in files:
            continue
        raw_name = os.path.basename(folder)
        parent = os.path.basename(os.path.dirname(folder))
        task_type = types.get(raw_name.lower()) or TASK_TYPES.get(raw_name.lower()) or (
            parent if parent in QUESTIONS else None)
        if task_type is None:
            raise InputError(f"{folder}: no task type known for {raw_name!r}; give one with "
                             f"--types '{{\"{raw_name}\": \"SC\"}}' (types: {sorted(QUESTIONS)})")
        found.append((folder, raw_name, task_type))
    if not found:
        raise InputError(f"{raw_dir}: no task folder (a folder holding train.json) found")
    names = [n.lower() for _, n, _ in found]
    if len(set(names)) != len(names):
        raise InputError(f"{raw_dir}: two task folders share a name: {sorted(names)}")
    return found


def write_json_atomically(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=4, ensure_ascii=False)
    os.replace(tmp, path)


def preprocess(raw_dir, out_dir, types=None, seed=RunSettings.seed):
    """Convert every raw task under raw_dir into out_dir; returns {task: {split: count}}."""
    tasks = find_raw_tasks(raw_dir, types)
    converted = {raw_name.lower(): convert_task(folder, raw_name, task_type, seed)
                 for folder, raw_name, task_type in tasks}  # everything is read before anything is written
    counts = {}
    for task, splits in converted.items():
        for split, (t5, llama) in splits.items():
            write_json_atomically(os.path.join(out_dir, split, f"{task}_T5.json"), t5)
            write_json_atomically(os.path.join(out_dir, split, f"{task}.json"), llama)
        counts[task] = {split: len(splits[split][0]) for split in SPLITS}
    return counts
