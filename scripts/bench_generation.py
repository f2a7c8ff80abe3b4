"""Batched, length-sorted greedy generation vs one example at a time (the released recipe), in one run.

    .venv/bin/python scripts/bench_generation.py [--n_examples 500] [--batch_size 64] [--d_model 64]

A tiny T5 (d_model 64, the demo's size) is trained on one synthetic task with LoRA, then the same merged model
predicts the same test examples both ways (generation cap 128 tokens as released); the script
checks that the predictions are identical and prints the speed-up.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))

from rkif.task_files import load_records, task_file
from rkif.prediction_files import write_predictions
from rkif.seq2seq import greedy_seq2seq, load_seq2seq_for_generation
from rkif.synthetic import write_synthetic_benchmark
from rkif.cli_runner import run
from rkif.tiny import build_tiny_t5, corpus_from_data_dir
from rkif.training import TRAIN
from rkif.settings import GenerationSettings

train = TRAIN["t5"]


def main(n_examples=500, batch_size=64, d_model=64, max_length=GenerationSettings.max_length, repeats=5,
         out_json="output/bench/generation.json"):
    work = tempfile.mkdtemp(prefix="rkif_genbench_")
    data = os.path.join(work, "data")
    write_synthetic_benchmark(data, ("sport",), n_train=200, n_dev=16, n_test=n_examples, seed=0)
    with open(os.path.join(data, "order.json"), "w") as f:
        json.dump(["sport"], f)
    model_dir = build_tiny_t5(os.path.join(work, "tiny_t5"), corpus_from_data_dir(data), d_model=d_model,
                              d_ff=2 * d_model, num_heads=4)
    train(method_name="SeqLoRA", base_model=model_dir, data_dir=data, dataset_id=os.path.join(data, "order.json"),
          task_id=0, output_path=os.path.join(work, "runs"), num_epochs=15, learning_rate=5e-3, warmup_steps=10,
          val_set_size=0, logging_steps=1000, eval_steps=10**6)
    adapter = os.path.join(work, "runs", "tiny_t5lora_SeqLoRA_dataset_id_order", "0-sport")
    model, tokenizer, device = load_seq2seq_for_generation(model_dir, adapter)
    records = load_records(task_file(data, "test", "sport"))

    def one_at_a_time():
        return [greedy_seq2seq(model, tokenizer, device, [r["input"]], max_length=max_length)[0] for r in records]

    def batched_run(i):
        out = os.path.join(work, f"batched_{i}.jsonl")
        write_predictions(records, lambda chunk: greedy_seq2seq(
            model, tokenizer, device, [r["input"] for r in chunk], max_length=max_length), out, batch_size)
        with open(out) as f:
            return [json.loads(line)["pred"] for line in f]

    # Alternating repeats, medians: single runs of a second or less are at the mercy of machine noise.
    times_single, times_batched = [], []
    for i in range(repeats):
        start = time.perf_counter()
        single = one_at_a_time()
        times_single.append(time.perf_counter() - start)
        start = time.perf_counter()
        batched = batched_run(i)
        times_batched.append(time.perf_counter() - start)
    t_single, t_batched = statistics.median(times_single), statistics.median(times_batched)

    identical = batched == single
    accuracy = sum(p == r["output"] for p, r in zip(batched, records)) / len(records)
    result = {"examples": len(records), "batch_size": batch_size, "d_model": d_model, "seconds_one_at_a_time": t_single,
              "seconds_batched": t_batched, "runs_one_at_a_time": times_single, "runs_batched": times_batched,
              "speedup": t_single / t_batched, "identical_predictions": identical,
              "accuracy": accuracy}
    os.makedirs(os.path.dirname(out_json) or ".", exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(records)} examples, medians of {repeats}: one at a time {t_single:.2f} s, "
          f"batched ({batch_size}, length-sorted) "
          f"{t_batched:.2f} s, speed-up {t_single / t_batched:.1f}x; identical predictions: {identical}; "
          f"accuracy {accuracy:.3f}\nwritten to {out_json}")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    run(main)
