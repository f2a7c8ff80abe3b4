"""BWT predictions: the adapter saved after task i on task i's test split, for every i (or one).

    python src/generate_bwt_t5lora.py --base_model PATH --dataset_id 4 [--method_name RKIF] [--service_begin_id I]
    python src/generate_bwt_t5lora.py --base_model PATH --dataset_id 4 --matrix    # every R[t][i], i <= t

Writes {output_path}/{model}lora_{method}_dataset_id_{id}_bwt/{i}-{task}.jsonl (id, gold, pred), or with
--matrix ..._matrix/after_{t}/{i}-{task}.jsonl, resuming an interrupted file and skipping finished ones.
Then: python src/eval_bwt.py (same flags; it also reads the avgPerf predictions).
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.generate_bwt_t5()
