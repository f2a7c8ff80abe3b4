"""src/report.py on hand-made run folders: per-order cells, means over orders and seeds, missing seeds."""

import csv
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(root, name, metrics):
    os.makedirs(os.path.join(root, name))
    with open(os.path.join(root, name, "metrics.json"), "w") as f:
        json.dump({"tasks": [], **metrics}, f)


def test_report_table(tmp_path):
    out = str(tmp_path / "output")
    rkif = {42: {"4": (0.80, -0.02), "5": (0.78, -0.03), "6": (0.76, -0.04)},
            7: {"4": (0.82, -0.01), "5": (0.74, -0.05)}}  # seed 7 never ran order 6
    for seed, orders in rkif.items():
        suffix = "" if seed == 42 else f"_seed{seed}"
        for order, (op, bwt) in orders.items():
            write(out, f"t5-largelora_RKIF_dataset_id_{order}{suffix}_avgPerf", {"OP": op})
            write(out, f"t5-largelora_RKIF_dataset_id_{order}{suffix}_bwt", {"OP": op, "BWT": bwt})
    for order, op in (("4", 0.90), ("5", 0.88), ("6", 0.86)):
        write(out, f"t5-largelora_MTL_dataset_id_{order}_avgPerf", {"OP": op})
    write(out, "t5-largelora_SeqLoRA_dataset_id_1_matrix", {"OP": 0.40, "BWT": -0.5, "forgetting": 0.5})
    # O-LoRA under both protocols, side by side: its own recipe's folders carry _recipe-olora
    write(out, "t5-largelora_OLoRA_dataset_id_4_avgPerf", {"OP": 0.70})
    write(out, "t5-largelora_OLoRA_dataset_id_4_recipe-olora_seed7_avgPerf", {"OP": 0.74})
    os.makedirs(os.path.join(out, "t5-largelora_RKIF_dataset_id_4_bwt_unrelated"))  # not a run folder
    p = subprocess.run([sys.executable, os.path.join(ROOT, "src", "report.py"), "--output_path", out],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    table = list(csv.DictReader(open(os.path.join(out, "report", "report.csv"))))
    assert [(r["method"], r["recipe"]) for r in table] == [("SeqLoRA", "rkif"), ("OLoRA", "olora"),
                                                           ("OLoRA", "rkif"), ("RKIF", "rkif"), ("MTL", "rkif")]
    o_own, o_common = table[1], table[2]
    assert (o_own["4 OP"], o_own["seeds"], o_common["4 OP"], o_common["seeds"]) == ("74.0", "7", "70.0", "42")
    assert o_own["paper Standard OP"] == "75.8" and o_own["paper protocol"].startswith("olora")
    rows = {r["method"]: r for r in table if r["recipe"] == "rkif"}
    r = rows["RKIF"]
    by_hand = f"{statistics.mean([80, 82]):.1f} +- {statistics.stdev([0.80, 0.82]) * 100:.1f}"
    assert r["4 OP"] == by_hand == "81.0 +- 1.4"
    assert r["5 BWT"] == f"-4.0 +- {statistics.stdev([-0.03, -0.05]) * 100:.1f}"
    assert r["6 OP"] == "missing (1/2 seeds)" and r["Standard OP"] == "missing (1/2 seeds)"
    assert r["Long OP"] == "" and r["seeds"] == "7,42"
    assert r["paper Standard OP"] == "78.4" and r["paper Long BWT"] == "-3.6"
    m = rows["MTL"]
    assert m["Standard OP"] == "88.0" and m["Standard BWT"] == "-" and m["4 BWT"] == "-"
    s = rows["SeqLoRA"]
    assert s["1 OP"] == "40.0" and s["1 BWT"] == "-50.0" and s["Long OP"] == "missing (0/1 seeds)"
    assert s["4 OP"] == "" and s["paper Standard BWT"] == "-50.4"
    md = open(os.path.join(out, "report", "report.md")).read()
    assert md.splitlines()[0].startswith("| method | recipe | 4 OP | 4 BWT | 5 OP |")
    assert "| RKIF | rkif | 81.0 +- 1.4 |" in md
    tex = open(os.path.join(out, "report", "report.tex")).read()
    assert r"81.0 $\pm$ 1.4" in tex and tex.startswith(r"\begin{tabular}")


def test_report_without_runs_is_an_error(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "src", "report.py"), "--output_path", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "error: --output_path: no scored runs under" in p.stderr
