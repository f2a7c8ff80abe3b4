"""Accuracy, OP, BWT and forgetting (docs/design.md, section 5), and the metrics files.

Rows come from rkif.predictions. Released-format rows are scored with the released rule (see
``is_correct``), so that OP and BWT of a released folder are what the released eval scripts print.
"""

import csv
import json
import os

from .predictions import RELEASED


def normalize(text):
    return text.strip().lower()


def is_correct(row):
    """Exact match after lower-casing, and stripping both sides for our files.

    Released-format rows use the released rule exactly: the line lower-cased, '</s>' removed from the
    prediction, no stripping (LLaMA answers may still end in '</s>').
    """
    if row.get("format") == RELEASED:
        return row["pred"].lower().replace("</s>", "") == row["gold"].lower()
    return normalize(row["pred"]) == normalize(row["gold"])


def missed_by_released_rule(rows):
    """Released-format rows the released rule counts wrong that match once whitespace is stripped."""
    return sum(r.get("format") == RELEASED and not is_correct(r)
               and normalize(r["pred"].replace("</s>", "")) == normalize(r["gold"]) for r in rows)


def accuracy(rows):
    """Share of rows where ``is_correct``."""
    if not rows:
        raise ValueError("accuracy of no predictions")
    return sum(is_correct(r) for r in rows) / len(rows)


def rouge_l(rows):
    """Mean ROUGE-L F-measure of prediction against gold (free-text tasks)."""
    from rouge_score import rouge_scorer

    if not rows:
        raise ValueError("ROUGE-L of no predictions")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return sum(scorer.score(r["gold"], r["pred"])["rougeL"].fmeasure for r in rows) / len(rows)


def score(rows, metric="accuracy"):
    return rouge_l(rows) if metric == "rougeL" else accuracy(rows)


def overall_performance(final_accuracies):
    """OP: mean accuracy over all tasks of the adapter after the last task."""
    return sum(final_accuracies) / len(final_accuracies)


def backward_transfer(diagonal, final):
    """BWT = mean over every task but the last of (a_Ti - a_ii)."""
    pairs = list(zip(diagonal, final))[:-1]
    if not pairs:
        raise ValueError("BWT needs at least two tasks")
    return sum(f - d for d, f in pairs) / len(pairs)


def matrix_metrics(R):
    """OP, BWT and average forgetting from a lower-triangular accuracy matrix R[t][i], i <= t.

    Forgetting of task i: the best accuracy it ever had before the last task, minus its final one.
    """
    T = len(R)
    final = R[T - 1]
    out = {"OP": overall_performance(final[:T])}
    if T > 1:
        out["BWT"] = backward_transfer([R[i][i] for i in range(T)], final)
        out["forgetting"] = sum(max(R[t][i] for t in range(i, T - 1)) - final[i] for i in range(T - 1)) / (T - 1)
    return out


def shown(value, digits=4):
    """value with digits decimals, a rounding error around zero (BWT -1.9e-17) shown as 0, not -0."""
    return f"{round(value, digits) + 0.0:.{digits}f}"


def write_report(prefix, rows, summary):
    """{prefix}.json (rows and summary) and {prefix}.csv (one row per task, then the summary), each
    written to a temporary file and renamed: a reader never sees half a file."""
    with open(prefix + ".json.tmp", "w", encoding="utf-8") as f:
        json.dump({"tasks": rows, **summary}, f, indent=2)
    with open(prefix + ".csv.tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer.writerow(keys)
        for r in rows:
            writer.writerow([r.get(k) for k in keys])
        for k, v in summary.items():
            if not isinstance(v, (list, dict)):
                writer.writerow([k, v])
    os.replace(prefix + ".json.tmp", prefix + ".json")
    os.replace(prefix + ".csv.tmp", prefix + ".csv")
