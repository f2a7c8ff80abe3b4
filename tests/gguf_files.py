"""Writing a tiny LLaMA-architecture model (grouped-query attention, byte-level BPE tokenizer) as a GGUF
file with the gguf package, as llama.cpp's converter lays one out: F32 tensors under GGUF names, the
query and key projections permuted to GGML's rotary layout, the tokenizer as a "gpt2" vocabulary with
its merges. The current stack's from_pretrained(gguf_file=...) reads it back (a test helper; the
real model of the benchmark comes as a GGUF file already)."""

import json

# Hugging Face LLaMA parameter names -> GGUF tensor names (llama.cpp's gguf-py TensorNameMap for LLaMA)
LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def ggml_rotary_layout(weight, heads):
    """What llama.cpp's converter does to q_proj / k_proj: the two rotary halves of each head interleaved
    (transformers undoes it when it reads the file)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def gguf_name(hf_name):
    name = hf_name.removeprefix("model.")
    if name == "embed_tokens.weight":
        return "token_embd.weight"
    if name == "norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    _, layer, rest = name.split(".", 2)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{LAYER_NAMES[module]}.{kind}"


def write_llama_gguf(model_dir, path):
    """model_dir (a LlamaForCausalLM and its byte-level BPE tokenizer, saved with save_pretrained) as GGUF."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    c = model.config
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    rope_theta = getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(c.hidden_size // heads)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_vocab_size(c.vocab_size)

    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = dict(spec["model"]["vocab"])
    for added in spec["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [None] * c.vocab_size
    for token, index in vocab.items():
        tokens[index] = token
    special = {a["id"] for a in spec["added_tokens"] if a["special"]}
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control, 1: normal
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_unk_token_id(tok.unk_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tok.chat_template)

    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # tied: the file holds the embedding only
        value = tensor.detach().float()
        if name.endswith("q_proj.weight"):
            value = ggml_rotary_layout(value, heads)
        elif name.endswith("k_proj.weight"):
            value = ggml_rotary_layout(value, kv_heads)
        writer.add_tensor(gguf_name(name), value.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
