"""Continual LoRA fine-tuning of T5 with Recurrent-KIF: one task of one order per call.

    python src/finetune_KIF_t5lora.py --base_model PATH --dataset_id 4 --task_id 0
    python src/finetune_KIF_t5lora.py --base_model PATH --dataset_id 4 --task_id 1   # starts from task 0's adapter

The adapter lands in {output_path}/{model_name}lora_{method}_dataset_id_{id}/{task_id}-{task}/
with a run_info.json beside it. Flag names are those of the released scripts.
"""

import os
import sys
import time

import fire

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.errors import InputError  # noqa: E402


def train(
    # method
    method_name: str = "RKIF",  # RKIF | SeqLoRA | Replay
    inner_iterations: int = 8,
    outer_iterations: int = 4,
    train_batch_size_outer: int = 8,
    empty_inner_score_flag: int = 1,
    empty_outer_score_flag: int = 0,
    quantile: float = 0.8,
    beta1: float = 0.85,
    beta2: float = 0.85,
    memory_data_ratio: float = 2,  # percent of each earlier task's training set kept in memory
    outer_optimizer: str = "shared",  # shared (released) | separate (own AdamW at outer_lr)
    outer_lr: float = 1e-3,  # used only with --outer_optimizer separate, as in the released T5 recipe
    # model and data
    base_model: str = "",
    data_dir: str = "data/long_sequence",
    output_path: str = "output",
    cache_dir: str = None,
    dataset_id=4,  # 1-6 or the path of a JSON file listing task names
    task_id: int = 0,
    # training
    batch_size: int = 8,
    micro_batch_size: int = 2,
    num_epochs: int = 10,
    learning_rate: float = 3e-4,
    warmup_steps: int = 50,
    max_steps: int = -1,  # > 0 overrides num_epochs (benchmarks, smoke runs)
    max_input_length: int = 1024,
    max_target_length: int = 128,
    val_set_size: int = 25,  # > 0 switches validation on (25 dev examples of every task so far)
    eval_steps: int = 40,  # evaluate and save every eval_steps optimizer steps
    logging_steps: int = 10,
    # lora
    lora_r: int = 8,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    lora_target_modules=("q", "v"),
    resume_from_checkpoint=None,  # a checkpoint folder, or True for the task's latest
    seed: int = 42,
):
    settings = dict(locals())
    started = time.time()
    from rkif.continual import plan_task
    from rkif.trainer import KIFConfig

    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if batch_size < 1 or micro_batch_size < 1 or batch_size % (micro_batch_size * world_size):
        raise InputError(
            f"--batch_size {batch_size} must be a positive multiple of --micro_batch_size {micro_batch_size} "
            f"x world size {world_size}"
        )
    gradient_accumulation_steps = batch_size // micro_batch_size // world_size
    if isinstance(lora_target_modules, str):
        lora_target_modules = [m.strip() for m in lora_target_modules.strip("[]").split(",") if m.strip()]
    try:
        kif_config = KIFConfig(inner_iterations, outer_iterations, train_batch_size_outer, quantile, beta1, beta2,
                               bool(empty_inner_score_flag), bool(empty_outer_score_flag), outer_optimizer, outer_lr)
    except ValueError as e:
        raise InputError(str(e)) from None
    plan = plan_task(method_name=method_name, dataset_id=dataset_id, task_id=task_id, data_dir=data_dir,
                     output_path=output_path, base_model=base_model, memory_data_ratio=memory_data_ratio,
                     val_set_size=val_set_size, seed=seed)

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if local_rank == 0:
        print("Training T5-LoRA with:\n" + "\n".join(f"  {k}: {v}" for k, v in settings.items()))
        print(f"  task: {plan.task_id}-{plan.task} of order {plan.order_name} {plan.tasks}")
        print(f"  train examples: {len(plan.train)}, memory: {len(plan.memory)}, validation: {len(plan.validation)}")
        print(f"  effective batch: {micro_batch_size} x {gradient_accumulation_steps} accumulation x {world_size} ranks")
        print(f"  previous adapter: {plan.previous_adapter}\n  output: {plan.output_dir}")

    import torch
    import transformers
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

    from rkif.adapters import save_adapter_atomically
    from rkif.continual import run_info_json
    from rkif.seq2seq import tokenize_seq2seq
    from rkif.trainer import RecurrentKIFTrainer

    transformers.set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model, cache_dir=cache_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(base_model, cache_dir=cache_dir)
    if plan.previous_adapter:
        model = PeftModel.from_pretrained(model, plan.previous_adapter, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(lora_target_modules),
            bias="none", task_type=TaskType.SEQ_2_SEQ_LM))
    if local_rank == 0:
        model.print_trainable_parameters()

    def features(records):
        return tokenize_seq2seq(records, tokenizer, max_input_length, max_target_length)

    train_data = plan.train + (plan.memory if method_name == "Replay" else [])
    validate = len(plan.validation) > 0
    args = transformers.TrainingArguments(
        output_dir=plan.output_dir,
        per_device_train_batch_size=micro_batch_size,
        per_device_eval_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_steps=logging_steps,
        evaluation_strategy="steps" if validate else "no",
        eval_steps=eval_steps if validate else None,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=validate,
        metric_for_best_model="eval_loss" if validate else None,
        greater_is_better=False if validate else None,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=seed,
    )
    trainer = RecurrentKIFTrainer(
        model=model,
        args=args,
        train_dataset=features(train_data),
        eval_dataset=features(plan.validation) if validate else None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True),
        kif_config=kif_config,
        memory_dataset=features(plan.memory) if method_name == "RKIF" else None,
    )
    model.config.use_cache = False
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)

    if trainer.args.should_save:
        info = run_info_json(
            settings, world_size=world_size, micro_batch_size=micro_batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps, started=started,
            extra={"task": plan.task, "order": plan.tasks, "previous_adapter": plan.previous_adapter,
                   "num_train_examples": len(train_data), "num_validation_examples": len(plan.validation),
                   "global_steps": trainer.state.global_step, "train_metrics": result.metrics,
                   "best_model_checkpoint": trainer.state.best_model_checkpoint,
                   "best_eval_loss": trainer.state.best_metric, "kif": trainer.kif_summary()},
        )
        save_adapter_atomically(model, plan.output_dir, {"run_info.json": info})
        print(f"saved adapter of task {plan.task_id}-{plan.task} to {plan.output_dir}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return None


def main(argv=None):
    try:
        fire.Fire(train, command=argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
