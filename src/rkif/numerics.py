"""How a base model and its adapter are put together for generation (one resolver, both backbones).

Merging LoRA into bf16 weights loses most of a small update: bf16 keeps 8 significant bits, so an
update far below a weight's rounding step rounds away (for weights of std 0.02, a third of an
update of std 1e-4 and two thirds of one of std 3e-5). So on a GPU the default keeps the adapter
unmerged, its branch in fp32, beside a bf16 base: the update is added to each layer's output
rather than to its weights.

    precision     base weights   LoRA                      when
    auto          bf16 | fp32    unmerged, fp32 | merged   GPU | CPU
    fp32          fp32           merged (exact in fp32)
    bf16, fp16    bf16, fp16     unmerged, fp32
    bf16_merged   bf16           merged into the weights   (this project's earlier GPU default)
    released      fp16           unmerged, fp16            T5 only: the released generator (bf16
                                                           load, LoRA unmerged, then model.half())
"""

from dataclasses import dataclass

from .errors import InputError

GENERATION_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "bf16_merged", "released")


@dataclass(frozen=True)
class GenerationNumerics:
    dtype: str  # of the base weights when loaded: "float32", "bfloat16" or "float16"
    merge: bool  # LoRA merged into the weights
    half_after: bool = False  # model.half() once assembled (the released T5 generator)


def generation_numerics(precision, device, backbone):
    """The GenerationNumerics of --precision on this device ("cuda..." or "cpu") for "t5" or "llama"."""
    if precision not in GENERATION_PRECISIONS:
        raise InputError(f"--precision must be one of {GENERATION_PRECISIONS}, got {precision!r}")
    on_gpu = device.startswith("cuda")
    if precision == "auto":
        if not on_gpu:
            return GenerationNumerics("float32", merge=True)
        import torch

        precision = "bf16" if backbone == "t5" or torch.cuda.is_bf16_supported() else "fp16"
    if precision == "released":
        if backbone != "t5":
            raise InputError("--precision released: the released numerics are those of the T5 generator (bf16 load, "
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
    LoRA branch in fp32, then halved where the numerics say so."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, adapter_dir)
    if numerics.merge:
        return model.merge_and_unload()
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    return model.half() if numerics.half_after else model
