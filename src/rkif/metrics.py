"""Accuracy, OP, BWT and forgetting (design doc section 5), and reading prediction files.

Prediction files are read as data, never executed: JSON lines {"id", "gold", "pred"}, or the
released `id|||gold|||['pred']` lines, whose last field is parsed with ast.literal_eval. Released
lines are scored with the released rule (see ``is_correct``), so that OP and BWT of a released
folder are what the released eval scripts print.
"""

import ast
import csv
import json
import os

from .errors import InputError

SEP = "|||"
RELEASED = "released"  # the "format" of a row read from a released id|||gold|||['pred'] line


def normalize(text):
    return text.strip().lower()


def read_predictions(path):
    """[{"id", "gold", "pred"}] from a .jsonl file or a released-format text file."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: prediction file not found (run the generation step first)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows.append(_parse_line(line.rstrip("\n"), path, n))
    return rows


def _parse_line(line, path, n):
    if line.startswith("{"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not a JSON line ({e.msg})") from None
        if not all(isinstance(row.get(k), str) for k in ("id", "gold", "pred")):
            raise InputError(f"{path}:{n}: a prediction line needs string fields id, gold and pred")
        return row
    parts = line.split(SEP)
    if len(parts) < 3:
        raise InputError(f"{path}:{n}: expected a JSON line or 'id|||gold|||[pred]', got {line[:80]!r}")
    # as the released eval: the id is the first field, the prediction the last
    ident, gold, pred = parts[0], SEP.join(parts[1:-1]), parts[-1]
    try:
        value = ast.literal_eval(pred)
    except (ValueError, SyntaxError):
        value = pred  # a bare prediction string
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return {"id": ident, "gold": gold, "pred": str(value), "format": RELEASED}


def check_complete(rows, test_records, path):
    """The prediction ids must be exactly the test split's ids, each once."""
    ids = [r["id"] for r in rows]
    expected = [r["id"] for r in test_records]
    seen = set()
    dupes = {i for i in ids if i in seen or seen.add(i)}
    if dupes:
        raise InputError(f"{path}: duplicate ids, e.g. {sorted(dupes)[:3]}")
    unknown = set(ids) - set(expected)
    if unknown:
        raise InputError(f"{path}: {len(unknown)} ids not in the test split, e.g. {sorted(unknown)[:3]}")
    missing = set(expected) - set(ids)
    if missing:
        raise InputError(
            f"{path}: incomplete, {len(rows)} of {len(expected)} test examples predicted "
            f"(missing e.g. {sorted(missing)[:3]}); rerun generation to finish it"
        )


def check_released_order(rows, test_records, path):
    """Released-format lines follow the test split's order, as the released eval requires."""
    for n, (row, record) in enumerate(zip(rows, test_records), 1):
        if row["id"] != record["id"]:
            raise InputError(f"{path}: prediction {n} has id {row['id']!r} where the test split has "
                             f"{record['id']!r}; released-format files follow the test split's order")


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


def plot_matrices(panels, tasks, path):
    """Heatmaps of R[t][i] (row: after training task t, column: evaluated on task i), one panel per
    (R, title) in ``panels``, side by side, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    T = len(tasks)
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * (1.6 + 0.7 * T), 1.4 + 0.6 * T), squeeze=False)
    for ax, (R, title) in zip(axes[0], panels):
        grid = np.full((T, T), np.nan)
        for t in range(T):
            for i in range(t + 1):
                grid[t, i] = R[t][i]
                ax.text(i, t, f"{R[t][i]:.2f}", ha="center", va="center",
                        color="white" if R[t][i] < 0.6 else "black", fontsize=8)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(T), [f"{i}-{n}" for i, n in enumerate(tasks)], rotation=45, ha="right")
        ax.set_yticks(range(T), [f"after {t}" for t in range(T)])
        ax.set_xlabel("evaluated on task")
        ax.set_title(title, fontsize=9)
    fig.subplots_adjust(wspace=0.45)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
