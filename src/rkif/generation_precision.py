"""How a base model and its adapter are put together for generation (one resolver, both backbones).

A LoRA update is small next to the weights it changes, and bf16 keeps 8 significant bits: an update
far below a rounding step of the weights, or of the activations it moves, rounds away. Merged into
bf16 weights it is lost at the weights; kept unmerged in fp32 beside a bf16 base, peft adds it into
a base output already rounded to bf16, and every later bf16 layer rounds again. Measured on the test
models (tests/test_generation.py), a 1e-3 relative update's effect on the logits comes out with an
error of 5 to 11 times its own size in bf16, merged or not (docs/evaluation.md), and adding the LoRA branch before the
rounding (the targeted layers in fp32) did not change that. So the default is fp32 on every device:
the update is kept exactly; bf16 and fp16 are explicit choices that halve the memory.

    precision     base weights   LoRA                      when
    auto, fp32    fp32           merged (exact in fp32)
    bf16, fp16    bf16, fp16     unmerged, fp32            (bf16 on a GPU: one that has it)
    bf16_merged   bf16           merged into the weights
    released      fp16           unmerged, fp16            T5 only: the released generator (bf16
                                                           load, LoRA unmerged, then model.half())
"""

from dataclasses import dataclass

import torch
from peft import PeftModel

from .errors import InputError

GENERATION_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "bf16_merged", "released")


@dataclass(frozen=True)
class GenerationNumerics:
    dtype: str  # of the base weights when loaded: "float32", "bfloat16" or "float16"
    merge: bool  # LoRA merged into the weights
    half_after: bool = False  # model.half() once assembled (the released T5 generator)


def generation_numerics(precision, device, backbone):
    """The GenerationNumerics of --gen_precision on this device ("cuda..." or "cpu") for "t5" or "llama"."""
    if precision not in GENERATION_PRECISIONS:
        raise InputError(f"--gen_precision must be one of {GENERATION_PRECISIONS}, got {precision!r}")
    if precision in ("bf16", "bf16_merged") and device.startswith("cuda"):
        if not torch.cuda.is_bf16_supported():
            raise InputError(f"--gen_precision {precision}: this GPU has no bfloat16 support; use fp32 (auto)"
                             + (" or fp16" if backbone == "llama" else ""))
    if precision == "auto":
        precision = "fp32"
    if precision == "released":
        if backbone != "t5":
            raise InputError("--gen_precision released: the released numerics are those of the T5 generator (bf16 load, "
                             "LoRA unmerged, then model.half()); for LLaMA use fp16 (the released LLaMA generator "
                             "loaded the base in 8 bit, which peft 0.4.0 cannot do on every GPU)")
        return GenerationNumerics("bfloat16", merge=False, half_after=True)
    if precision == "fp32":
        return GenerationNumerics("float32", merge=True)
    if precision == "bf16_merged":
        return GenerationNumerics("bfloat16", merge=True)
    return GenerationNumerics({"bf16": "bfloat16", "fp16": "float16"}[precision], merge=False)


def assemble(base, adapter_dir, numerics):
    """The generation model: base (loaded in numerics.dtype) with the adapter, merged or with its
    LoRA branch in fp32, then halved where the numerics say so. adapter_dir None: the base alone (a
    zero-shot row)."""
    if adapter_dir is None:
        return base.half() if numerics.half_after else base
    model = PeftModel.from_pretrained(base, adapter_dir)
    if numerics.merge:
        return model.merge_and_unload()
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    return model.half() if numerics.half_after else model

