"""LLaMA OP predictions: the adapter after the last task of an order on every task's test split
(Alpaca prompt, left-padded batches, greedy, up to --max_new_tokens, answer after "### Response:").

    python src/generate_avgPerf_llama.py --base_model PATH --dataset_id 4 [--method_name RKIF]

Writes {output_path}/{model}lora_{method}_dataset_id_{id}_avgPerf/{i}-{task}.jsonl (id, gold, pred),
resuming an interrupted file and skipping finished ones. Then: python src/eval_avgPerf.py (same flags).
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.generate_avgperf_llama()
