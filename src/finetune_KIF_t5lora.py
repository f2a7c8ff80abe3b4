"""Continual LoRA fine-tuning of T5 with Recurrent-KIF: one task of one order per call.

    python src/finetune_KIF_t5lora.py --base_model PATH --dataset_id 4 --task_id 0
    python src/finetune_KIF_t5lora.py --base_model PATH --dataset_id 4 --task_id 1   # starts from task 0's adapter

The adapter lands in {output_path}/{model_name}lora_{method}_dataset_id_{id}/{task_id}-{task}/
with a run_info.json beside it. Flag names are those of the released scripts.
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.train_t5()
