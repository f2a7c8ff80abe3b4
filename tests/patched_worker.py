"""Run by tests/test_patches.py: two tasks of a tiny T5 driven as the released finetune_KIF_t5lora.py
drives the patched transformers.Trainer (its calls, in its order), adapters saved to OUT/{t}-{task}.

    python tests/patched_worker.py OUT MODEL DATA ORDER_JSON

Needs the patched transformers first on PYTHONPATH. Nothing here is copied from the released
code: it restates the sequence of calls that matters (seed, datasets, model loading, shuffles,
the Trainer's keywords) with the settings of tests/test_patches.py.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import transformers
from datasets import Dataset, load_dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from rkif.memory import build_memory_buffer  # equal to the released sampler: test_memory.py

transformers.set_seed(42)  # the released script seeds at import, before anything else
out, model_dir, data, order = sys.argv[1:5]
tasks = json.load(open(order))
cache = os.path.join(out, "datasets_cache")


class RankAllocatorLike:
    """Shaped like the released utils.lora_importance_bilevel.RankAllocator: the keyword arguments the
    released script passes, stored under the same attribute names."""

    def __init__(self, model, init_warmup, beta1, beta2, quantile, rank, taylor):
        self.model, self.initial_warmup, self.rank, self.taylor = model, init_warmup, rank, taylor
        self.beta1, self.beta2, self.quantile = beta1, beta2, quantile


def train_file(task):
    return os.path.join(data, "train", f"{task}_T5.json")


for t, task in enumerate(tasks):
    current = load_dataset("json", data_files=train_file(task), cache_dir=cache)["train"]
    memory = None
    if t > 0:
        earlier = [json.load(open(train_file(x))) for x in tasks[:t]]
        memory = Dataset.from_list(build_memory_buffer(earlier, 25, seed=42))
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, device_map="auto")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def preprocess(examples):
        inputs = tokenizer(examples["input"], max_length=1024, truncation=True)
        with tokenizer.as_target_tokenizer():
            labels = tokenizer(examples["output"], max_length=128, truncation=True)
        inputs["labels"] = labels["input_ids"]
        return inputs

    if t == 0:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["q", "v"], lora_dropout=0.05,
                                                 bias="none", task_type="SEQ_2_SEQ_LM"))
    else:
        model = PeftModel.from_pretrained(model, os.path.join(out, f"{t - 1}-{tasks[t - 1]}"), is_trainable=True)
    train_data = current.shuffle().map(preprocess, remove_columns=["input", "output"], batched=True)
    memory_data = None
    if memory is not None:
        memory_data = memory.shuffle().map(preprocess, remove_columns=["input", "output"], batched=True)
    allocator = RankAllocatorLike(model, init_warmup=50, beta1=0.85, beta2=0.85, quantile=0.8, rank=8,
                                  taylor="param_first")
    output_dir = os.path.join(out, f"{t}-{task}")
    trainer = transformers.Trainer(
        model=model, train_dataset=train_data, train_dataset_memory=memory_data, eval_dataset=None,
        ipt_score=allocator, outer_lr=1e-3, empty_inner_score_flag=1, empty_outer_score_flag=0, outer_iterations=2,
        args=transformers.TrainingArguments(
            per_device_train_batch_size=2, gradient_accumulation_steps=2, train_batch_size_outer=4,
            inner_iterations=2, warmup_steps=1, num_train_epochs=2, learning_rate=1e-3, fp16=False,
            logging_steps=10, optim="adamw_torch", evaluation_strategy="no", save_strategy="steps",
            eval_steps=None, save_steps=40, output_dir=output_dir, save_total_limit=2,
            load_best_model_at_end=False, group_by_length=False, report_to="none"),
        data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True),
    )
    model.config.use_cache = False
    trainer.train()
    print(f"task {t}: {len(trainer.kif_history)} fusions, {trainer.state.global_step} steps")
    model.save_pretrained(output_dir)
print(f"trainer: {type(trainer).__module__}.{type(trainer).__qualname__}")
