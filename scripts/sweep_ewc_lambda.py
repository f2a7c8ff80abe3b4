"""EWC's penalty weight from a small sweep on the demo benchmark (how the default was chosen).

    .venv/bin/python scripts/sweep_ewc_lambda.py [--lambdas 1000,3000,10000] [--seed 0] [--ewc_fisher batch]

Each value trains the demo's three synthetic tasks with EWC (the demo's settings: tiny T5,
15 epochs, lr 5e-3, micro-batch 8, validation off, the default per-example Fisher; --seed as the
demo's), predicts every R[t][i] and reports OP, BWT, forgetting
and the lowest accuracy right after a task's own training (plasticity). Writes
{out}/sweep.json.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

from rkif.demo import DEMO_FLAGS, prepare
from rkif.cli_runner import run
from rkif.pipeline import run_order
from rkif.settings import EWCSettings


def main(lambdas="1000,3000,10000,30000,100000,300000", out="output/ewc_sweep", num_epochs=15, learning_rate=5e-3,
         seed=0, ewc_fisher=EWCSettings.ewc_fisher):
    values = [float(v) for v in str(lambdas).split(",")] if not isinstance(lambdas, (list, tuple)) else lambdas
    data, order, model = prepare(out, seed=seed)
    rows = []
    for value in values:
        result = run_order(base_model=model, dataset_id=order, methods="EWC", data_dir=data,
                           output_path=os.path.join(out, f"lambda_{value:g}"), num_epochs=num_epochs,
                           learning_rate=learning_rate, val_set_size=0, ewc_lambda=value, seed=seed,
                           ewc_fisher=ewc_fisher, **DEMO_FLAGS)["EWC"]
        R = result["R"]
        rows.append({"ewc_lambda": value, "OP": result["OP"], "BWT": result["BWT"], "forgetting": result["forgetting"],
                     "min_own_task_accuracy": min(R[t][t] for t in range(len(R)))})
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print(f"\n{'ewc_lambda':>11s} {'OP':>8s} {'BWT':>8s} {'forgetting':>11s} {'min R[t][t]':>12s}")
    for r in rows:
        print(f"{r['ewc_lambda']:11g} {r['OP']:8.4f} {r['BWT']:8.4f} {r['forgetting']:11.4f} "
              f"{r['min_own_task_accuracy']:12.4f}")


if __name__ == "__main__":
    run(main)
