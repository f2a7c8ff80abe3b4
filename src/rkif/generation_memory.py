"""How many test examples a generation batch can hold: a memory budget in bytes, not a count.

A batch's memory grows with its padded tokens (the KV cache, the prefill's activations and logits)
and, under eager attention, with the square of its length (one layer's attention scores and their
fp32 softmax at a time). Longest inputs come first, so a fixed count that suits short inputs runs
a long-input test split (the Long benchmark's IMDB and MultiRC are kept whole) out of memory at its
first batch. Batches are cut where batch x example_bytes(longest input) would pass the budget.

The byte counts below are an upper estimate from the model's config (no allocator overhead: the
budget keeps 15% of the free memory back for that).
"""

import torch

from .errors import InputError

HEADROOM = 0.85  # share of the free GPU memory after loading that batches may take


def example_bytes(config, dtype_bytes, input_tokens, new_tokens):
    """Bytes one example of ``input_tokens`` adds to a generation batch of this model.

    Decoder-only (LLaMA): KV cache over input + new tokens in every layer; at prefill, one layer's
    activations (q, k, v, o and the MLP's gate, up and product), the logits of every position (4.28.1
    computes them all) with their fp32 copy, and one layer's attention: scores, fp32 softmax and
    probabilities per head (heads x L^2).
    Encoder-decoder (T5): the encoder's layer activations and attention (plus the fp32 position
    bias), its output, the decoder's cross-attention KV cache over the input, its self-attention KV
    cache over the output, and one step's logits.
    """
    L = int(input_tokens)
    if getattr(config, "is_encoder_decoder", False):
        heads, d_kv, d_model = config.num_heads, config.d_kv, config.d_model
        decoder_layers = getattr(config, "num_decoder_layers", None) or config.num_layers
        inner = heads * d_kv
        return (2 * decoder_layers * inner * dtype_bytes * (L + new_tokens)  # cross- and self-attention caches
                + L * d_model * dtype_bytes  # the encoder's output
                + L * (4 * inner + 2 * config.d_ff + 2 * d_model) * dtype_bytes  # one encoder layer's activations
                + heads * L * L * (2 * dtype_bytes + 4 + 4)  # scores, fp32 softmax, probabilities, position bias
                + config.vocab_size * (dtype_bytes + 4))  # one step's logits and their fp32 copy
    hidden, heads = config.hidden_size, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    total = L + new_tokens
    return (2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes * total  # KV cache
            + L * (4 * hidden + 3 * config.intermediate_size) * dtype_bytes  # one layer's activations
            + L * config.vocab_size * (dtype_bytes + 4)  # the prefill's logits and their fp32 copy
            + heads * L * L * (2 * dtype_bytes + 4))  # one layer's attention


def memory_budget(memory_gb, device):
    """Bytes a generation batch may take: --generation_memory_gb when given (> 0); else, on a GPU, HEADROOM
    of the free memory once the model is loaded; else (CPU) None, no budget (the count alone)."""
    if memory_gb < 0:
        raise InputError(f"--generation_memory_gb must be >= 0 (0: from the free GPU memory), got {memory_gb}")
    if memory_gb > 0:
        return int(memory_gb * 2 ** 30)
    if not str(device).startswith("cuda"):
        return None

    free, _ = torch.cuda.mem_get_info()
    return int(free * HEADROOM)


def batch_fits(config, dtype_bytes, new_tokens, budget):
    """fits(batch_size, longest_input_tokens) for rkif.prediction_files.budget_batches; None without a budget."""
    if budget is None:
        return None

    def fits(batch_size, longest):
        return batch_size * example_bytes(config, dtype_bytes, longest, new_tokens) <= budget

    return fits


def largest_batch(config, dtype_bytes, input_tokens, new_tokens, budget, cap=1024):
    """The largest batch of inputs this long that fits the budget (0: not even one), up to cap."""
    per_example = example_bytes(config, dtype_bytes, input_tokens, new_tokens)
    return min(cap, budget // per_example)


def add_memory_budget(predict, model, device, new_tokens, memory_gb):
    """predict.fits from the loaded model's config and weight dtype, for both backbones' predictors."""
    base_weight = next(p for n, p in model.named_parameters() if "lora_" not in n)
    fits = batch_fits(model.config, base_weight.element_size(), new_tokens, memory_budget(memory_gb, device))
    if fits is not None:
        predict.fits = fits
