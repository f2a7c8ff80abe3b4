"""Every difference between the two supported stacks, in one place.

    pinned:  transformers 4.28.1, peft 0.4.0 (requirements.txt): the reproduction stack, bitwise equal to
             the released scripts. Every helper here makes exactly the call the code made before this
             module existed.
    current: transformers 5.x, peft 0.2x (requirements-current.txt): today's models (grouped-query
             attention, rope_theta, BPE tokenizers, chat templates, GGUF files).

The gate is the installed transformers version, read once (``STACK``); no other module of the package
tests a version or probes for a feature. docs/stacks.md says what differs and why.
"""

import contextlib
import importlib.metadata
import os

import numpy as np
import peft
import torch
import torch.utils.checkpoint as checkpointing
import transformers
import transformers.trainer_utils

from .errors import InputError
from .settings import TrainingSettings

TRANSFORMERS_VERSION = transformers.__version__
_MAJOR = int(TRANSFORMERS_VERSION.split(".")[0])
if TRANSFORMERS_VERSION != "4.28.1" and _MAJOR != 5:
    raise ImportError(f"rkif supports transformers 4.28.1 (the reproduction stack, requirements.txt) or 5.x (the "
                      f"current stack, requirements-current.txt); this environment has {TRANSFORMERS_VERSION}: "
                      "install one of them (make install, or make install STACK=current)")
STACK = "pinned" if _MAJOR == 4 else "current"
CURRENT = STACK == "current"
STACK_SUFFIX = "" if STACK == "pinned" else "_current"  # of folders whose content differs between the stacks
INSTALL_CURRENT = "make install STACK=current"


# --- numpy ------------------------------------------------------------------------------------------

# np.random.get_state() holds a uint32 array; pickled, it names these globals (numpy 2 moved
# numpy.core to numpy._core, and the pickles name the module they were written with).
_numpy_core = np._core if int(np.__version__.split(".")[0]) >= 2 else np.core
NUMPY_RNG_GLOBALS = [_numpy_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


# --- TrainingArguments ------------------------------------------------------------------------------

# 4.28.1's TrainingArguments fields that 5.x renamed (group_by_length became a sampling strategy)
RENAMED_ARGUMENTS = {"evaluation_strategy": "eval_strategy", "no_cuda": "use_cpu", "xpu_backend": "ddp_backend",
                     "gradient_checkpointing": "activation_checkpointing"}


def training_arguments(**kwargs):
    """transformers.TrainingArguments from the 4.28.1 field names, renamed on 5.x (RENAMED_ARGUMENTS)."""
    if CURRENT:
        for old, new in RENAMED_ARGUMENTS.items():
            if old in kwargs:
                kwargs[new] = kwargs.pop(old)
        # 4.28.1 trains bf16 on a machine without a GPU through CPU autocast (the tests' bf16 path); 5.x
        # does so only when told to use the CPU
        kwargs["use_cpu"] = bool(kwargs.get("use_cpu")) or not torch.cuda.is_available()
        kwargs["activation_checkpointing"] = bool(kwargs.get("activation_checkpointing"))
        kwargs["train_sampling_strategy"] = "group_by_length" if kwargs.pop("group_by_length", TrainingSettings.group_by_length) else "random"
        # the released loss: each micro-batch's mean over its own label tokens (divided_for_accumulation)
        kwargs["average_tokens_across_devices"] = False
    return transformers.TrainingArguments(**kwargs)


def training_argument(args, name):
    """The value of TrainingArguments field ``name`` (its 4.28.1 name) on either stack."""
    if not CURRENT:
        return getattr(args, name)
    if name == "group_by_length":
        return args.train_sampling_strategy == "group_by_length"
    return getattr(args, RENAMED_ARGUMENTS.get(name, name))


# --- the loss the Trainer differentiates ------------------------------------------------------------

def use_released_loss_scaling(trainer):
    """Called once by the Trainer subclass: on 5.x, tell the Trainer that compute_loss returns a loss
    already divided for gradient accumulation (divided_for_accumulation does it), so training_step does not
    divide it by the length of the current accumulation window."""
    if CURRENT:
        trainer.loss_is_scaled_for_ga = True


def optimizer_steps_per_epoch(batches, accumulation):
    """Optimizer steps the Trainer takes per epoch of ``batches`` micro-batches. 4.28.1: whole windows
    only (a last, shorter window's gradients carry into the next epoch's first step, and the epoch's
    last window of the run is dropped); 5.x: a last, shorter window is a step of its own."""
    if CURRENT:
        return max(-(-batches // accumulation), 1)
    return max(batches // accumulation, 1)


def divided_for_accumulation(trainer, loss):
    """A training micro-batch's loss as compute_loss returns it, so that the gradient is the released one.

    4.28.1's training_step divides every micro-batch's mean loss by gradient_accumulation_steps (also in
    an epoch's last, shorter window, and in the outer steps): the loss is returned as it is. 5.x would
    divide by the current window's length, or normalise by the label tokens of the whole window
    (num_items_in_batch); this project passes no num_items_in_batch, and divides by the configured
    steps here."""
    return loss / trainer.args.gradient_accumulation_steps if CURRENT else loss


# --- fp16 gradient scaling --------------------------------------------------------------------------

def grad_scaler(trainer):
    """The Trainer's fp16 GradScaler, or None when it does not scale (4.28.1: trainer.scaler; 5.x: the
    accelerator's)."""
    if CURRENT:
        return trainer.accelerator.scaler
    return trainer.scaler if trainer.do_grad_scaling else None


def install_grad_scaler(trainer, scaler):
    """Make the Trainer scale fp16 gradients with ``scaler`` (tests drive the scaler logic on CPU with
    torch.amp.GradScaler("cpu"))."""
    if CURRENT:
        trainer.accelerator.scaler = scaler
    else:
        trainer.do_grad_scaling, trainer.scaler = True, scaler


def raw_optimizer(optimizer):
    """The torch optimizer under accelerate's wrapper (5.x); the optimizer itself on 4.28.1."""
    while CURRENT and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


# --- checkpoints ------------------------------------------------------------------------------------

@contextlib.contextmanager
def rotation_held(trainer):
    """While the Trainer writes a checkpoint, keep it from rotating older ones away: this project rotates
    once the new checkpoint is marked complete. 4.28.1 calls trainer._rotate_checkpoints (the mixin defers
    it); 5.x calls transformers.trainer_utils.rotate_checkpoints at the end of _save_checkpoint, which
    does nothing without a save_total_limit."""
    if not CURRENT:
        yield
        return
    limit = trainer.args.save_total_limit
    trainer.args.save_total_limit = None
    try:
        yield
    finally:
        trainer.args.save_total_limit = limit


def rotate_checkpoints(trainer, parent, output_dir, use_mtime):
    """The stock rotation (newest and best kept, oldest removed down to save_total_limit); ``parent`` is
    super() of the caller, whose _rotate_checkpoints 4.28.1 provides."""
    if CURRENT:
        transformers.trainer_utils.rotate_checkpoints(
            output_dir=output_dir, save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint, use_mtime=use_mtime)
    else:
        parent._rotate_checkpoints(use_mtime=use_mtime, output_dir=output_dir)


def restore_cuda_rng(state, distributed):
    """The CUDA RNG state of a checkpoint's rng_state file. 4.28.1 saved one device's state under DDP and
    every device's otherwise; 5.x the other way round."""
    if distributed != CURRENT:
        torch.cuda.random.set_rng_state(state)
    else:
        torch.cuda.random.set_rng_state_all(state)


# --- adapters ---------------------------------------------------------------------------------------

def save_adapter(model, directory):
    """model.save_pretrained(directory) as adapter_model.bin on both stacks (peft >= 0.5 writes
    safetensors by default): completion markers, the finished-task test and the plain-data check name it."""
    if CURRENT:
        model.save_pretrained(directory, safe_serialization=False)
    else:
        model.save_pretrained(directory)


# --- loading models and tokenizers ------------------------------------------------------------------

def model_load_kwargs(dtype=None, skip_init=False):
    """from_pretrained keywords for a dtype (None: the library's default, fp32 on 4.28.1) and, on 4.28.1,
    low_cpu_mem_usage (skip weight initialisation, so the torch RNG is left to the LoRA initialisation;
    5.x always loads without initialising, and reads the dtype from ``dtype``, no longer torch_dtype)."""
    if CURRENT:
        return {"dtype": dtype or torch.float32}
    kwargs = {"torch_dtype": dtype} if dtype is not None else {}
    if skip_init:
        kwargs["low_cpu_mem_usage"] = True
    return kwargs


def is_gguf(base_model):
    return isinstance(base_model, str) and base_model.lower().endswith(".gguf")


def check_gguf(base_model, flag="base_model"):
    """A .gguf --base_model: an existing file, on the current stack."""
    if not CURRENT:
        raise InputError(f"--{flag} {base_model}: GGUF files load on the current stack only (transformers 5.x); "
                         f"install it with {INSTALL_CURRENT} and run with .venv-current/bin/python")
    if not os.path.isfile(base_model):
        raise InputError(f"--{flag}: GGUF file {base_model} does not exist")


def pretrained_source(base_model, model=False):
    """(the path from_pretrained is given, its extra keywords): a GGUF file is read through gguf_file= from
    its folder; a model from it is dequantised whole (to the dtype asked for), never left in GGUF blocks:
    LoRA trains on dense weights, and 5.x would otherwise look for a matmul kernel to download."""
    if not is_gguf(base_model):
        return base_model, {}
    kwargs = {"gguf_file": os.path.basename(base_model)}
    if model:
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    return os.path.dirname(os.path.abspath(base_model)), kwargs


def dense_model(model):
    """A model loaded from a GGUF file, dequantised, as the plain dense model it now is: the Trainer refuses
    to train a model that still names a quantizer, and peft would dispatch on it."""
    if getattr(model, "hf_quantizer", None) is not None and model.hf_quantizer.quantization_config.dequantize:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def causal_tokenizer_class():
    """LlamaTokenizer (sentencepiece, as released) on 4.28.1; AutoTokenizer (any causal LM's) on 5.x."""
    if CURRENT:
        return transformers.AutoTokenizer
    return transformers.LlamaTokenizer


def causal_pad_id(tokenizer, released_pad_id):
    """The id that pads causal LM batches. 4.28.1 (LlamaTokenizer): the released one, 0 (unk in LLaMA's
    vocabulary). 5.x (any causal LM): the tokenizer's own pad token unless it is EOS (many chat models pad
    with EOS, which is a label), then its unk token, and EOS only where it has neither (labels are padded
    with -100 either way)."""
    if not CURRENT:
        return released_pad_id
    for candidate in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if candidate is not None and candidate != tokenizer.eos_token_id:
            return candidate
    return tokenizer.eos_token_id


def prepare_8bit(model):
    if CURRENT:
        return peft.prepare_model_for_kbit_training(model)

    return peft.prepare_model_for_int8_training(model)  # gone from peft 0.2x


def non_reentrant_checkpointing():
    """Gradient checkpointing without reentrant backward passes, on both stacks.

    A reentrant checkpoint runs its block's backward as a separate pass, so a LoRA weight inside the block
    that also gets a gradient from outside DDP's forward (the EWC and O-LoRA penalties) is marked ready
    twice, and DDP stops at the first synchronised backward ("Expected to mark a variable ready only
    once"). transformers 5.x checkpoints without reentrance by default; 4.28.1 calls
    torch.utils.checkpoint.checkpoint with torch's default, the reentrant variant, and takes no keyword
    for it, so this training process's checkpoint defaults to use_reentrant=False (the same recomputation,
    the same gradients; it also needs no inputs that require grad)."""
    if CURRENT:
        return

    if getattr(checkpointing.checkpoint, "rkif_non_reentrant", False):
        return
    reentrant_default = checkpointing.checkpoint

    def checkpoint(function, *args, use_reentrant=False, **kwargs):
        return reentrant_default(function, *args, use_reentrant=use_reentrant, **kwargs)

    checkpoint.rkif_non_reentrant = True
    checkpointing.checkpoint = checkpoint


def check_8bit_with_peft():
    """peft 0.4.0 (pinned) trains 8-bit layers only on a GPU before Hopper with bitsandbytes < 0.45; peft
    0.2x (current) has no such limit."""
    if CURRENT:
        return

    major, minor = torch.cuda.get_device_capability()
    if major >= 9:
        raise InputError(
            f"--load_8bit does not work on this GPU (compute capability {major}.{minor}, Hopper or newer) with "
            "peft 0.4.0: bitsandbytes runs Int8 matmuls on Hopper only from 0.45.0 on, and 0.45.0 removed the "
            "memory_efficient_backward that peft 0.4.0 reads (bitsandbytes issues #538 and #1450). Leave it off: "
            "bf16 (the default on this GPU) needs about 14 GB of weights for a 7B model; or use the current stack "
            f"({INSTALL_CURRENT})")
    version = importlib.metadata.version("bitsandbytes")
    if tuple(int(x) for x in version.split(".")[:2]) >= (0, 45):
        raise InputError(f"--load_8bit with bitsandbytes {version}: peft 0.4.0 reads memory_efficient_backward, "
                         "which bitsandbytes removed in 0.45.0; install bitsandbytes<0.45 (0.37 to 0.44 work with "
                         "peft 0.4.0 on GPUs before Hopper) or leave --load_8bit off")


def load_8bit_kwargs(local_rank):
    if CURRENT:
        return {"quantization_config": transformers.BitsAndBytesConfig(load_in_8bit=True), "dtype": torch.float16,
                "device_map": {"": local_rank}}
    return {"load_in_8bit": True, "torch_dtype": torch.float16, "device_map": {"": local_rank}}


def t5_tokenizer_from_sentencepiece(spm_path, model_max_length):
    """A fast T5 tokenizer of a sentencepiece unigram model (pad 0, eos 1, unk 2, no sentinels). 4.28.1
    converts the model itself; 5.x builds the Unigram tokenizer from the pieces and their scores."""
    if not CURRENT:
        return transformers.T5TokenizerFast(vocab_file=spm_path, extra_ids=0, model_max_length=model_max_length,
                                            from_slow=True)
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=spm_path)
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


# The tiny causal LM that tests and the demo build (rkif.tiny): LLaMA-2's kind on the pinned stack (which
# has neither grouped-query attention nor a tokenizer other than sentencepiece's for LLaMA); SmolLM2's
# kind on the current one.
TINY_CAUSAL_TOKENIZER = "bpe" if CURRENT else "sentencepiece"
