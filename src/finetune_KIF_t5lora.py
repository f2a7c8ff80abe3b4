"""Continual LoRA fine-tuning of T5 with Recurrent-KIF: one task of one order per call.

    python src/finetune_KIF_t5lora.py --base_model PATH --dataset_id 4 --task_id 0
    python src/finetune_KIF_t5lora.py --base_model PATH --dataset_id 4 --task_id 1   # starts from task 0's adapter

The adapter lands in {output_path}/{model_name}lora_{method}_dataset_id_{id}/{task_id}-{task}/
with a run_info.json beside it. Flag names are those of the released scripts.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.flags import run  # noqa: E402
from rkif.methods import EWC_LAMBDA  # noqa: E402


def train(
    # method
    method_name: str = "RKIF",  # RKIF | SeqLoRA | Replay | OLoRA | IncLoRA | EWC | MTL
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
    outer_micro_batch_size: int = 0,  # 0: the memory batch in one pass (released); N: chunks of N
    lambda_orth: float = None,  # OLoRA: weight of the orthogonality penalty (recipe: 0.5; olora: per task)
    lambda_l2: float = None,  # OLoRA, IncLoRA: weight of the L2 norm of the new branch (recipe: 0)
    ewc_lambda: float = EWC_LAMBDA,  # EWC: weight of the Fisher penalty
    ewc_fisher: str = "per_example",  # EWC: per_example (empirical Fisher) | batch (squared micro-batch gradients)
    # model and data
    base_model: str = "",
    data_dir: str = "data/long_sequence",
    output_path: str = "output",
    cache_dir: str = None,
    dataset_id=4,  # 1-6 or the path of a JSON file listing task names
    task_id: int = 0,
    # training; None: the recipe's value (rkif / olora, rkif.recipes)
    recipe: str = "rkif",  # rkif (the Recurrent-KIF release) | olora (the O-LoRA release); flags given win
    batch_size: int = None,  # rkif 8 | olora 64
    micro_batch_size: int = None,  # rkif 2 | olora 8
    eval_batch_size: int = 8,  # per device, the Trainer's default as released
    num_epochs: int = None,  # rkif 10 | olora 1 (MNLI 2 in the Long orders)
    learning_rate: float = None,  # rkif 3e-4 | olora 1e-3
    warmup_steps: int = None,  # rkif 50 | olora 0
    lr_scheduler_type: str = None,  # rkif linear | olora constant
    max_steps: int = -1,  # > 0 overrides num_epochs (benchmarks, smoke runs)
    max_input_length: int = None,  # rkif 1024 | olora 512
    max_target_length: int = None,  # rkif 128 | olora 50
    val_set_size: int = None,  # rkif 25 | olora 0; > 0 switches validation on (25 dev examples of every task so far)
    eval_steps: int = 40,  # evaluate and save every eval_steps optimizer steps
    logging_steps: int = 10,
    precision: str = "fp32",  # fp32 (released) | bf16 (a GPU with bfloat16); T5 overflows in fp16
    tf32: bool = False,  # TF32 matmuls on Ampere and newer GPUs
    report_to: str = "none",  # none | tensorboard | wandb (optional packages), comma-separated
    gradient_checkpointing: bool = False,  # recompute activations in backward (memory for time)
    # lora
    lora_r: int = None,  # 8
    lora_alpha: int = None,  # 32
    lora_dropout: float = None,  # rkif 0.05 | olora 0.1
    lora_target_modules=("q", "v"),
    resume_from_checkpoint=None,  # a checkpoint folder; the flag alone: the newest complete one; auto: that or step 0
    seed: int = 42,
):
    settings = dict(locals())
    started = time.time()
    from rkif.continual import plan_task
    from rkif.adapters import adapter_exists
    from rkif.folder_lock import hold_folder
    from rkif.lora import parse_target_modules
    from rkif.training import (check_training_flags, gradient_accumulation, kif_config, print_settings, resolve_resume,
                               set_up_devices, train_and_save, training_precision)
    from rkif.recipes import apply_recipe
    from rkif.tasks import resolve_order

    settings, recipe_record = apply_recipe(settings, "t5", resolve_order(dataset_id)[1])
    s = settings
    check_training_flags(settings)
    set_up_devices(int(os.environ.get("WORLD_SIZE", 1)))
    training_precision(precision, "t5")
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    micro_batch_size = s["micro_batch_size"]
    gradient_accumulation_steps = gradient_accumulation(s["batch_size"], micro_batch_size, world_size)
    lora_target_modules = parse_target_modules(lora_target_modules)
    kif = kif_config(settings)
    plan = plan_task(method_name=method_name, dataset_id=dataset_id, task_id=task_id, data_dir=data_dir,
                     output_path=output_path, base_model=base_model, memory_data_ratio=memory_data_ratio,
                     val_set_size=s["val_set_size"], seed=seed, recipe=s["recipe"])
    if plan.nothing_to_do:
        print(plan.nothing_to_do)
        return
    # one process per task folder, from before the checkpoints are read until the adapter is saved
    with hold_folder(plan.output_dir):
        if adapter_exists(plan.output_dir):  # finished by the process that held the folder before us
            print(f"nothing to do: {plan.output_dir} holds the finished adapter of task {task_id}")
            return
        resume_from_checkpoint = resolve_resume(resume_from_checkpoint, plan.output_dir)
        print_settings("Training T5-LoRA with", settings, plan, micro_batch_size, gradient_accumulation_steps,
                       world_size)

        import transformers
        from peft import TaskType
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

        from rkif.flags import load_pretrained
        from rkif.methods import get_method
        from rkif.methods.setup import prepare_task_model
        from rkif.seq2seq import tokenize_seq2seq

        transformers.set_seed(seed)
        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, base_model, cache_dir=cache_dir)
        # low_cpu_mem_usage skips weight initialisation, so the LoRA initialisation takes the first draws
        # of the torch RNG after set_seed, as with the released device_map="auto" loading.
        model = load_pretrained(AutoModelForSeq2SeqLM.from_pretrained, base_model, cache_dir=cache_dir,
                                low_cpu_mem_usage=True)
        model, extra_loss = prepare_task_model(
            get_method(method_name), model, plan, r=s["lora_r"], alpha=s["lora_alpha"], dropout=s["lora_dropout"],
            target_modules=lora_target_modules, task_type=TaskType.SEQ_2_SEQ_LM, settings=settings)
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:
            model.print_trainable_parameters()

        train_and_save(
            plan=plan, model=model, kif=kif, settings=settings,
            features=lambda records: tokenize_seq2seq(records, tokenizer, s["max_input_length"],
                                                      s["max_target_length"]),
            data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True),
            micro_batch_size=micro_batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
            world_size=world_size, num_epochs=s["num_epochs"], max_steps=max_steps, learning_rate=s["learning_rate"],
            warmup_steps=s["warmup_steps"], lr_scheduler_type=s["lr_scheduler_type"], eval_steps=eval_steps,
            logging_steps=logging_steps, seed=seed,
            resume_from_checkpoint=resume_from_checkpoint, started=started, eval_batch_size=eval_batch_size,
            extra_loss=extra_loss, run_info_extra={"recipe": recipe_record},
            precision=precision, backbone="t5", tf32=tf32, report_to=report_to,
            gradient_checkpointing=gradient_checkpointing)


def main(argv=None):
    run(train, argv)


if __name__ == "__main__":
    main()
