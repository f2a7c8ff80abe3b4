"""Run by tests/test_patches.py: two tasks on a tiny T5, through either API, adapters saved to OUT.

    python tests/patched_worker.py keyword|subclass OUT MODEL DATA

keyword: transformers.Trainer with the released keywords (needs the patched transformers first on
PYTHONPATH); subclass: rkif.trainer.RecurrentKIFTrainer on the stock install.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, TaskType, get_peft_model  # noqa: E402
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq  # noqa: E402

from rkif.data import load_records, task_file  # noqa: E402
from rkif.importance import ImportanceTracker  # noqa: E402
from rkif.memory import build_memory_buffer  # noqa: E402
from rkif.seq2seq import tokenize_seq2seq  # noqa: E402

mode, out, model_dir, data = sys.argv[1:5]
tok = AutoTokenizer.from_pretrained(model_dir)
tasks = ["weather", "sport"]
train_sets = [load_records(task_file(data, "train", t)) for t in tasks]
for t, task in enumerate(tasks):
    transformers.set_seed(42)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    if t == 0:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q", "v"],
                                                 task_type=TaskType.SEQ_2_SEQ_LM))
    else:
        model = PeftModel.from_pretrained(model, os.path.join(out, f"{t - 1}-{tasks[t - 1]}"), is_trainable=True)
    features = tokenize_seq2seq(train_sets[t], tok, 128, 16)
    memory = tokenize_seq2seq(build_memory_buffer(train_sets[:t], 25), tok, 128, 16)
    common = dict(output_dir=os.path.join(out, "trainer"), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                  num_train_epochs=2, learning_rate=1e-3, warmup_steps=1, save_strategy="no", report_to="none",
                  seed=42, disable_tqdm=True, dataloader_pin_memory=False)
    collator = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, padding=True)
    if mode == "keyword":
        args = transformers.TrainingArguments(**common, inner_iterations=2, train_batch_size_outer=4)
        kif = dict(train_dataset_memory=memory, ipt_score=ImportanceTracker(0.85, 0.85), outer_lr=1e-3,
                   empty_inner_score_flag=1, empty_outer_score_flag=0, outer_iterations=2) if t > 0 else {}
        trainer = transformers.Trainer(model=model, args=args, train_dataset=features, data_collator=collator, **kif)
    else:
        from rkif.trainer import KIFConfig, RecurrentKIFTrainer

        trainer = RecurrentKIFTrainer(
            model=model, args=transformers.TrainingArguments(**common), train_dataset=features, data_collator=collator,
            kif_config=KIFConfig(inner_iterations=2, outer_iterations=2, train_batch_size_outer=4),
            memory_dataset=memory if t > 0 else None)
    trainer.train()
    assert (len(trainer.kif_history) > 0) == (t > 0), trainer.kif_history
    model.save_pretrained(os.path.join(out, f"{t}-{task}"))
print(f"{mode}: {type(trainer).__module__}.{type(trainer).__qualname__}")
