"""The paper's table from finished runs: methods x (OP, BWT per order, means over the Standard and Long orders).

    python src/report.py [--output_path output] [--out output/report] [--model_name t5-largelora]

Scans {output_path} for scored prediction folders, {model}_{method}_dataset_id_{order}[_seed{n}]_{kind}
with a metrics.json (written by eval_avgPerf.py, eval_bwt.py or the pipeline; kind avgPerf, bwt or
matrix), and writes report.md, report.csv and report.tex. Figures are percentages, mean +- sample
std over the seeds found for the method. A cell that some of the method's seeds lack is shown as
missing (k/n seeds), and a mean over the Standard orders (4-6) or the Long orders (1-3) needs every
one of those orders for every seed: nothing is averaged silently. The paper's figures (docs/design.md,
section 6; the O-LoRA paper's main table where marked) are a separate, labelled column group.
BWT is the mean over the first N-1 tasks, as released (some harnesses divide by N).
"""

import csv
import json
import os
import statistics

from rkif.errors import InputError
from rkif.methods import METHODS
from rkif.run_folders import DEFAULT_RECIPE, DEFAULT_SEED, PREDICTION_FOLDER
from rkif.cli_runner import run
from rkif.settings import RunSettings

FOLDER = PREDICTION_FOLDER
STANDARD, LONG = ("4", "5", "6"), ("1", "2", "3")
METHOD_ORDER = ("SeqLoRA", "Replay", "EWC", "LwF", "IncLoRA", "OLoRA", "TaSL", "RKIF", "MTL")
# (Standard OP, Standard BWT, Long OP, Long BWT), T5-large, mean of 3 orders; "+" marks the O-LoRA paper's
# main table as reused by later papers (OP only), the rest is the Recurrent-KIF paper.
PAPER = {
    "SeqLoRA": ("43.7", "-50.4", "-", "-"),
    "Replay": ("57.8+", "-", "54.2+", "-"),
    "EWC": ("50.3+", "-", "45.1+", "-"),
    "LwF": ("52.3+", "-", "46.9+", "-"),
    "IncLoRA": ("66.4+", "-", "61.2+", "-"),
    "OLoRA": ("75.8", "-3.8", "69.6", "-4.1"),
    "TaSL": ("76.3", "-4.0", "74.4", "-5.3"),
    "RKIF": ("78.4", "-2.8", "77.8", "-3.6"),
    "MTL": ("80.3", "-", "81.8", "-"),
}
# The protocol behind each published row (docs/baselines.md). The OP figures of SeqLoRA, Replay, EWC, IncLoRA
# and O-LoRA come from the O-LoRA paper, trained under its own recipe (olora); its Replay and EWC fine-tune the
# whole model, not a LoRA. The BWT of SeqLoRA and O-LoRA, and RKIF and MTL, are the Recurrent-KIF paper's runs.
PAPER_PROTOCOL = {"SeqLoRA": "olora (BWT: rkif paper)", "Replay": "olora, full model", "EWC": "olora, full model",
                  "LwF": "olora, full model", "IncLoRA": "olora", "OLoRA": "olora (BWT: rkif paper)",
                  "TaSL": "rkif paper", "RKIF": "rkif", "MTL": "rkif"}


def has_bwt(method):
    """Whether the method has an adapter after each task (MTL has not: no BWT); a method unknown here is shown."""
    return method not in METHODS or "bwt" in METHODS[method].prediction_kinds


def scan(output_path, model_name=None):
    """{(model, method, recipe): {(order, seed): {"OP": x, "BWT": y}}} from the metrics.json files found."""
    runs = {}
    for root, dirs, files in os.walk(output_path):
        m = FOLDER.match(os.path.basename(root))
        if not m or "metrics.json" not in files or (model_name and m["model"] != model_name):
            continue
        with open(os.path.join(root, "metrics.json")) as f:
            metrics = json.load(f)
        key = (m["model"], m["method"], m["recipe"] or DEFAULT_RECIPE)
        cell = runs.setdefault(key, {}).setdefault((m["order"], int(m["seed"] or DEFAULT_SEED)), {})
        if m["kind"] in ("avgPerf", "matrix"):
            cell["OP"] = metrics["OP"]
        if m["kind"] in ("bwt", "matrix") and "BWT" in metrics:
            cell["BWT"] = metrics["BWT"]
    return runs


def summarise(values, seeds):
    """'mean +- std' in percent over seeds, or 'missing (k/n seeds)' when a seed lacks the value."""
    present = [values[s] for s in seeds if values.get(s) is not None]
    if len(present) < len(seeds):
        return f"missing ({len(present)}/{len(seeds)} seeds)"
    mean = statistics.mean(present) * 100
    return f"{mean:.1f}" if len(present) == 1 else f"{mean:.1f} +- {statistics.stdev(present) * 100:.1f}"


def table(runs):
    """(header, rows) of the report."""
    orders = sorted({o for cells in runs.values() for o, _ in cells},
                    key=lambda o: (0, STANDARD.index(o)) if o in STANDARD else (1, LONG.index(o)) if o in LONG
                    else (2, o))
    models = sorted({model for model, _, _ in runs})
    header = ["method", "recipe", *[f"{o} {k}" for o in orders for k in ("OP", "BWT")], "Standard OP", "Standard BWT",
              "Long OP", "Long BWT", "seeds", "paper Standard OP", "paper Standard BWT", "paper Long OP",
              "paper Long BWT", "paper protocol"]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows = []
    for model, method, recipe in sorted(runs, key=lambda k: (k[0], rank.get(k[1], len(rank)), k[1], k[2])):
        cells = runs[(model, method, recipe)]
        seeds = sorted({s for _, s in cells})
        row = {"method": method if len(models) == 1 else f"{model} {method}", "recipe": recipe}
        for o in orders:
            for k in ("OP", "BWT"):
                if k == "BWT" and not has_bwt(method):
                    row[f"{o} {k}"] = "-"
                elif any((o, s) in cells for s in seeds):
                    row[f"{o} {k}"] = summarise({s: cells.get((o, s), {}).get(k) for s in seeds}, seeds)
                else:
                    row[f"{o} {k}"] = ""
        for name, group in (("Standard", STANDARD), ("Long", LONG)):
            for k in ("OP", "BWT"):
                if k == "BWT" and not has_bwt(method):
                    row[f"{name} {k}"] = "-"
                    continue
                if not any((o, s) in cells for o in group for s in seeds):
                    row[f"{name} {k}"] = ""
                    continue
                per_seed = {}
                for s in seeds:
                    values = [cells.get((o, s), {}).get(k) for o in group]
                    per_seed[s] = None if None in values else statistics.mean(values)
                row[f"{name} {k}"] = summarise(per_seed, seeds)
        row["seeds"] = ",".join(str(s) for s in seeds)
        for key, value in zip(("paper Standard OP", "paper Standard BWT", "paper Long OP", "paper Long BWT"),
                              PAPER.get(method, ("", "", "", ""))):
            row[key] = value
        row["paper protocol"] = PAPER_PROTOCOL.get(method, "")
        rows.append(row)
    return header, rows


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex(header, rows):
    esc = lambda t: t.replace("+-", r"$\pm$").replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(r[h]) for h in header) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def main(output_path=RunSettings.output_path, out=None, model_name=None):
    """out: folder for report.md/.csv/.tex (default {output_path}/report). model_name: e.g. t5-largelora."""
    if not os.path.isdir(output_path):
        raise InputError(f"--output_path: folder {output_path} does not exist")
    runs = scan(output_path, model_name)
    if not runs:
        raise InputError(f"--output_path: no scored runs under {output_path} (folders *_dataset_id_*_avgPerf or "
                         "_bwt with a metrics.json: run the eval scripts or the pipeline first)")
    header, rows = table(runs)
    out = out or os.path.join(output_path, "report")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(header, rows))
    with open(os.path.join(out, "report.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out, "report.tex"), "w") as f:
        f.write(latex(header, rows))
    print(markdown(header, rows))
    print("OP and BWT in percent, mean +- std over seeds; BWT over the first N-1 tasks; recipe: the protocol "
          "these runs trained under; paper columns: the Recurrent-KIF paper, + the O-LoRA paper's table (T5-large, "
          "mean of 3 orders), paper protocol: the recipe behind each published figure")
    print(f"written: {out}/report.md, report.csv, report.tex")


if __name__ == "__main__":
    run(main)
