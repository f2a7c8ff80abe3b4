"""Continual LoRA fine-tuning of LLaMA-2 with Recurrent-KIF: one task of one order per call.

    python src/finetune_KIF_llama.py --base_model /models/Llama-2-7b-chat-hf --dataset_id 4 --task_id 0

Same loop as the T5 path (rkif.trainer), on a causal LM: Alpaca prompt, loss on the response
tokens only (unless --train_on_inputs), EOS appended, pad id 0 with left padding, cutoff 512.
Reads {data_dir}/{split}/{task}.json (id, instruction, input, output). The adapter lands in
{output_path}/{model_name}lora_{method}_dataset_id_{id}/{task_id}-{task}/ with run_info.json.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rkif.flags import run  # noqa: E402
from rkif.methods import EWC_LAMBDA  # noqa: E402
from rkif.errors import InputError  # noqa: E402

LLAMA_FIELDS = ("instruction", "input", "output")


def train(
    # method
    method_name: str = "RKIF",  # RKIF | SeqLoRA | Replay | OLoRA | IncLoRA | EWC | MTL
    inner_iterations: int = 8,
    outer_iterations: int = 4,
    train_batch_size_outer: int = 64,
    empty_inner_score_flag: int = 1,
    empty_outer_score_flag: int = 0,
    quantile: float = 0.8,
    beta1: float = 0.85,
    beta2: float = 0.85,
    memory_data_ratio: float = 2,
    outer_optimizer: str = "shared",  # shared (the working T5 recipe) | separate (own AdamW at outer_lr)
    outer_lr: float = 1e-3,
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
    dataset_id=4,
    task_id: int = 0,
    # training; None: the recipe's value (rkif / olora, rkif.recipes)
    recipe: str = "rkif",  # rkif (the Recurrent-KIF release) | olora (the O-LoRA release); flags given win
    batch_size: int = None,  # rkif 64 | olora 64
    micro_batch_size: int = None,  # rkif 16 | olora 8
    eval_batch_size: int = 8,  # per device, the Trainer's default as released
    num_epochs: int = None,  # rkif 10 | olora 1 (MNLI 2 in the Long orders)
    learning_rate: float = None,  # rkif 3e-4 | olora 1e-3
    warmup_steps: int = None,  # rkif 50 | olora 0
    lr_scheduler_type: str = None,  # rkif linear | olora constant
    max_steps: int = -1,
    cutoff_len: int = None,  # 512
    val_set_size: int = None,  # rkif 25 | olora 0; > 0 switches validation on (25 dev examples of every task so far)
    eval_steps: int = 40,
    logging_steps: int = 10,
    precision: str = "auto",  # auto: fp32 on CPU, bf16 (or fp16) on a GPU | fp32 | bf16 | fp16
    load_8bit: bool = False,  # needs bitsandbytes (optional) and a GPU
    tf32: bool = False,  # TF32 matmuls on Ampere and newer GPUs
    report_to: str = "none",  # none | tensorboard | wandb (optional packages), comma-separated
    gradient_checkpointing: bool = True,  # on, as the released 8-bit preparation turned it on
    # lora
    lora_r: int = None,  # 8
    lora_alpha: int = None,  # 32, the released script's default (its grid passes none)
    lora_dropout: float = None,  # rkif 0.05 | olora 0.1
    lora_target_modules=("q_proj", "v_proj"),
    # llm hyperparams
    train_on_inputs: bool = False,
    add_eos_token: bool = True,
    long_prompts: str = "released",  # released: cut at cutoff_len as released | shorten_input: cut the input's middle
    group_by_length: bool = False,
    prompt_template_name: str = "alpaca",
    resume_from_checkpoint=None,  # a checkpoint folder; the flag alone: the newest complete one; auto: that or step 0
    seed: int = 42,
):
    settings = dict(locals())
    started = time.time()
    from rkif.causal import check_long_prompts, check_template
    from rkif.continual import plan_task
    from rkif.adapters import adapter_exists
    from rkif.folder_lock import hold_folder
    from rkif.lora import parse_target_modules
    from rkif.training import (check_training_flags, gradient_accumulation, kif_config, print_settings, resolve_resume,
                               set_up_devices, train_and_save, training_precision)
    from rkif.recipes import apply_recipe
    from rkif.tasks import resolve_order

    settings, recipe_record = apply_recipe(settings, "llama", resolve_order(dataset_id)[1])
    s = settings
    check_training_flags(settings)
    set_up_devices(int(os.environ.get("WORLD_SIZE", 1)))
    check_template(prompt_template_name)
    check_long_prompts(long_prompts)
    training_precision(precision, "llama")  # refuse a bad choice before anything is loaded
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    micro_batch_size, cutoff_len = s["micro_batch_size"], s["cutoff_len"]
    gradient_accumulation_steps = gradient_accumulation(s["batch_size"], micro_batch_size, world_size)
    lora_target_modules = parse_target_modules(lora_target_modules)
    if load_8bit:
        check_8bit(precision)
        precision = "fp16"  # Int8 layers compute in fp16; the Trainer's scaler goes with it, as released
    kif = kif_config(settings)
    plan = plan_task(method_name=method_name, dataset_id=dataset_id, task_id=task_id, data_dir=data_dir,
                     output_path=output_path, base_model=base_model, memory_data_ratio=memory_data_ratio,
                     val_set_size=s["val_set_size"], seed=seed, recipe=s["recipe"], suffix="", fields=LLAMA_FIELDS)
    if plan.nothing_to_do:
        print(plan.nothing_to_do)
        return
    # one process per task folder, from before the checkpoints are read until the adapter is saved
    with hold_folder(plan.output_dir):
        if adapter_exists(plan.output_dir):  # finished by the process that held the folder before us
            print(f"nothing to do: {plan.output_dir} holds the finished adapter of task {task_id}")
            return
        resume_from_checkpoint = resolve_resume(resume_from_checkpoint, plan.output_dir)
        print_settings("Training LLaMA-LoRA with", settings, plan, micro_batch_size, gradient_accumulation_steps,
                       world_size)

        import torch
        import transformers
        from peft import TaskType
        from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

        from rkif.causal import load_tokenizer, long_prompt_report, tokenize_causal
        from rkif.flags import load_pretrained
        from rkif.methods import get_method
        from rkif.methods.setup import prepare_task_model

        transformers.set_seed(seed)
        tokenizer = load_tokenizer(base_model, cache_dir)
        fp16, bf16 = training_precision(precision, "llama")
        # low_cpu_mem_usage skips weight initialisation, so the LoRA initialisation takes the first draws
        # of the torch RNG after set_seed, as with the released device_map loading.
        load_kwargs = {"torch_dtype": torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32,
                       "low_cpu_mem_usage": True}
        if load_8bit:
            load_kwargs = {"load_in_8bit": True, "torch_dtype": torch.float16,
                           "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}
        model = load_pretrained(AutoModelForCausalLM.from_pretrained, base_model, cache_dir=cache_dir, **load_kwargs)
        if load_8bit:
            from peft import prepare_model_for_int8_training

            model = prepare_model_for_int8_training(model)
        model, extra_loss = prepare_task_model(
            get_method(method_name), model, plan, r=s["lora_r"], alpha=s["lora_alpha"], dropout=s["lora_dropout"],
            target_modules=lora_target_modules, task_type=TaskType.CAUSAL_LM, settings=settings)
        # LoRA weights train in fp32 even on a half-precision base: the fp16 gradient scaler cannot
        # unscale fp16 parameters, and fp32 keeps small outer-loop updates from rounding away.
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.data = p.data.float()
        model.config.pad_token_id = tokenizer.pad_token_id
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:
            model.print_trainable_parameters()

        long_prompt_counts = long_prompt_report(plan, tokenizer, cutoff_len, long_prompts)
        train_and_save(
            plan=plan, model=model, kif=kif, settings=settings,
            run_info_extra={"long_prompts": long_prompt_counts, "recipe": recipe_record},
            features=lambda records: tokenize_causal(records, tokenizer, cutoff_len, train_on_inputs, add_eos_token,
                                                     long_prompts),
            data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True),
            micro_batch_size=micro_batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
            world_size=world_size, num_epochs=s["num_epochs"], max_steps=max_steps, learning_rate=s["learning_rate"],
            warmup_steps=s["warmup_steps"], lr_scheduler_type=s["lr_scheduler_type"], eval_steps=eval_steps,
            logging_steps=logging_steps, seed=seed,
            resume_from_checkpoint=resume_from_checkpoint, started=started, eval_batch_size=eval_batch_size,
            extra_loss=extra_loss,
            precision=precision, backbone="llama", tf32=tf32, report_to=report_to,
            gradient_checkpointing=gradient_checkpointing,
            group_by_length=group_by_length)


def check_8bit(precision):
    """--load_8bit where it can work: bitsandbytes installed, a GPU before Hopper, a bitsandbytes that
    still has what peft 0.4.0 reads, and fp16 (what Int8 layers compute in)."""
    import importlib.metadata
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
        raise InputError("--load_8bit needs the optional bitsandbytes package and a GPU; "
                         "without them leave it off (fp32 on CPU, bf16/fp16 on a GPU)")
    if precision not in ("auto", "fp16"):
        raise InputError(f"--load_8bit with --precision {precision}: 8-bit layers compute in fp16; use --precision "
                         "fp16 (or auto), or leave --load_8bit off")
    major, minor = torch.cuda.get_device_capability()
    if major >= 9:
        raise InputError(
            f"--load_8bit does not work on this GPU (compute capability {major}.{minor}, Hopper or newer) with "
            "peft 0.4.0: bitsandbytes runs Int8 matmuls on Hopper only from 0.45.0 on, and 0.45.0 removed the "
            "memory_efficient_backward that peft 0.4.0 reads (bitsandbytes issues #538 and #1450). Leave it off: "
            "bf16 (the default on this GPU) needs about 14 GB of weights for a 7B model")
    version = importlib.metadata.version("bitsandbytes")
    if tuple(int(x) for x in version.split(".")[:2]) >= (0, 45):
        raise InputError(f"--load_8bit with bitsandbytes {version}: peft 0.4.0 reads memory_efficient_backward, "
                         "which bitsandbytes removed in 0.45.0; install bitsandbytes<0.45 (0.37 to 0.44 work with "
                         "peft 0.4.0 on GPUs before Hopper) or leave --load_8bit off")


def main(argv=None):
    run(train, argv)


if __name__ == "__main__":
    main()
