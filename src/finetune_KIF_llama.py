"""Continual LoRA fine-tuning of LLaMA-2 with Recurrent-KIF: one task of one order per call.

    python src/finetune_KIF_llama.py --base_model /models/Llama-2-7b-chat-hf --dataset_id 4 --task_id 0

Same loop as the T5 path (rkif.kif_trainer), on a causal LM: Alpaca prompt, loss on the response
tokens only (unless --train_on_inputs), EOS appended, pad id 0 with left padding, cutoff 512.
Reads {data_dir}/{split}/{task}.json (id, instruction, input, output). The adapter lands in
{output_path}/{model_name}lora_{method}_dataset_id_{id}/{task_id}-{task}/ with run_info.json.
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.train_llama()
