"""A small Recurrent-KIF Trainer on the tiny T5 (the loop and checkpoint tests share it)."""

import transformers
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from rkif.task_files import load_records, task_file
from rkif.seq2seq import tokenize_seq2seq
from rkif.settings import KIFConfig
from rkif.kif_trainer import RecurrentKIFTrainer


def make_trainer(tiny_t5, bench_dir, tmp_path, *, memory=True, K=3, M=2, accumulation=1, micro=2, epochs=1,
                 max_steps=-1, outer_optimizer="shared", warmup=0, save_steps=None, callbacks=None, **kif):
    transformers.set_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q", "v"], task_type=TaskType.SEQ_2_SEQ_LM))
    feats = lambda task: tokenize_seq2seq(load_records(task_file(bench_dir, "train", task)), tok, 128, 16)  # noqa
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs, max_steps=max_steps, learning_rate=1e-2, warmup_steps=warmup,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        report_to="none", seed=0, logging_steps=1000, dataloader_pin_memory=False, disable_tqdm=True)
    return RecurrentKIFTrainer(
        model=model, args=args, train_dataset=feats("sport"), data_collator=DataCollatorForSeq2Seq(tok, padding=True),
        callbacks=callbacks,
        kif_config=KIFConfig(inner_iterations=K, outer_iterations=M, train_batch_size_outer=4,
                             outer_optimizer=outer_optimizer, **kif),
        memory_dataset=feats("weather")[:8] if memory else None)


class StopAt(transformers.TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
