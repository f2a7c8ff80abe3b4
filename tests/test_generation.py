import json
import os

from rkif.compat import save_adapter
import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSeq2SeqLM

from conftest import random_lora_adapter
from rkif.prediction_files import length_sorted_batches, read_partial, write_predictions
from rkif.seq2seq import greedy_seq2seq, load_seq2seq_for_generation


def records(n):
    return [{"id": f"t_{i}", "input": "x" * (i % 7 + 1), "output": f"gold{i}"} for i in range(n)]


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_length_sorted_batches_partition_longest_first():
    lengths = [3, 9, 1, 9, 5, 2, 7]
    batches = length_sorted_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(7))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)


def test_predictions_written_in_split_order(tmp_path):
    recs = records(10)
    out = str(tmp_path / "p" / "0-t.jsonl")
    n = write_predictions(recs, lambda chunk: [r["input"].upper() for r in chunk], out, batch_size=3)
    assert n == 10 and not os.path.exists(out + ".partial")
    assert lines(out) == [{"id": r["id"], "gold": r["output"], "pred": r["input"].upper()} for r in recs]
    assert write_predictions(recs, None, out, batch_size=3) == 0  # finished files are skipped


def test_interrupted_file_resumes_without_duplicates_or_losses(tmp_path):
    recs = records(20)
    out = str(tmp_path / "0-t.jsonl")
    calls = []

    def flaky(chunk):
        calls.append([r["id"] for r in chunk])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return [f"p-{r['id']}" for r in chunk]

    with pytest.raises(KeyboardInterrupt):
        write_predictions(recs, flaky, out, batch_size=4)
    assert not os.path.exists(out)
    kept = lines(out + ".partial")
    assert len(kept) == 8
    with open(out + ".partial", "a") as f:
        f.write('{"id": "t_19", "gold": "go')  # a torn line, as from a kill mid-write
    done_before = {r["id"] for r in kept}
    predicted = []

    def rest(chunk):
        predicted.extend(r["id"] for r in chunk)
        return [f"p-{r['id']}" for r in chunk]

    assert write_predictions(recs, rest, out, batch_size=4) == 12
    assert not set(predicted) & done_before and len(predicted) == 12
    final = lines(out)
    assert [r["id"] for r in final] == [r["id"] for r in recs]
    assert all(r["pred"] == f"p-{r['id']}" for r in final)


def test_read_partial_cuts_a_torn_line(tmp_path):
    p = tmp_path / "x.partial"
    p.write_text('{"id": "a", "gold": "g", "pred": "p"}\n{"id": "b", "go')
    assert list(read_partial(str(p))) == ["a"]
    assert p.read_text() == '{"id": "a", "gold": "g", "pred": "p"}\n'


def test_generation_numerics_per_precision_and_device(monkeypatch):
    from rkif.errors import InputError
    from rkif.generation_precision import GenerationNumerics, generation_numerics

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    for device in ("cpu", "cuda"):
        for backbone in ("t5", "llama"):
            assert generation_numerics("auto", device, backbone) == GenerationNumerics("float32", merge=True)
    assert generation_numerics("bf16", "cuda", "t5") == GenerationNumerics("bfloat16", merge=False)
    assert generation_numerics("bf16_merged", "cuda", "llama") == GenerationNumerics("bfloat16", merge=True)
    assert generation_numerics("released", "cuda", "t5") == GenerationNumerics("bfloat16", False, half_after=True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert generation_numerics("auto", "cuda", "t5") == GenerationNumerics("float32", merge=True)
    assert generation_numerics("fp16", "cuda", "llama") == GenerationNumerics("float16", merge=False)
    for precision in ("bf16", "bf16_merged"):  # as training refuses it there
        with pytest.raises(InputError, match=f"--gen_precision {precision}: this GPU has no bfloat16 support"):
            generation_numerics(precision, "cuda", "t5")
    with pytest.raises(InputError, match="released numerics are those of the T5 generator"):
        generation_numerics("released", "cuda", "llama")
    with pytest.raises(InputError, match="--gen_precision must be one of"):
        generation_numerics("int8", "cpu", "t5")


def test_bf16_generation_keeps_the_adapter_unmerged_in_fp32(tiny_t5, tmp_path):
    """Run on CPU (bf16 matmuls work there): bf16 base, LoRA branch unmerged in fp32; bf16_merged folds the
    adapter into the weights; released is fp16 throughout; fp32 merged."""
    random_lora_adapter(AutoModelForSeq2SeqLM, tiny_t5, tmp_path / "adapter", ["q", "v"], TaskType.SEQ_2_SEQ_LM, 0.3)
    for precision in ("fp32", "bf16", "bf16_merged", "released"):
        m, tok, _ = load_seq2seq_for_generation(tiny_t5, str(tmp_path / "adapter"), precision)
        lora = {n: p.dtype for n, p in m.named_parameters() if "lora_" in n}
        base = {p.dtype for n, p in m.named_parameters() if "lora_" not in n}
        if precision == "bf16":
            assert lora and set(lora.values()) == {torch.float32} and base == {torch.bfloat16}
            assert all(not mod.merged for mod in m.modules() if hasattr(mod, "merged"))
        elif precision == "released":
            assert lora and set(lora.values()) == {torch.float16} and base == {torch.float16}
        else:
            assert not lora and base == {torch.float32 if precision == "fp32" else torch.bfloat16}


def small_update_error(backbone, base, folder, relative, numerics):
    """||effect - fp32 effect|| / ||fp32 effect|| of a LoRA update of the given size relative to each targeted
    weight (Frobenius norms), on the logits of three prompts, under the given GenerationNumerics; the effect is
    the logits with the adapter minus without it, both under those numerics."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rkif.causal import load_tokenizer
    from rkif.generation_precision import GenerationNumerics, assemble

    seq2seq = backbone == "t5"
    model_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = get_peft_model(model_class.from_pretrained(base), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q", "v"] if seq2seq else ["q_proj", "v_proj"],
        task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=g))
                b.copy_(torch.randn(b.shape, generator=g))
                weight = getattr(module, "base_layer", module).weight
                b.mul_(relative * weight.norm() / (module.scaling["default"] * (b @ a)).norm())
    save_adapter(model, str(folder))
    tokenizer = AutoTokenizer.from_pretrained(base) if seq2seq else load_tokenizer(base)
    enc = tokenizer(["Text: a bright and sunny day in the park\nAnswer:", "Text: rain all night\nAnswer:",
                     "Text: what is the weather like\nAnswer:"], return_tensors="pt", padding=True)

    def effect(numerics):
        dtype = getattr(torch, numerics.dtype)
        unmerged = assemble(model_class.from_pretrained(base, torch_dtype=dtype), str(folder),
                            GenerationNumerics(numerics.dtype, merge=False, half_after=numerics.half_after))
        extra = {"decoder_input_ids": torch.zeros(3, 1, dtype=torch.long)} if seq2seq else {}
        with torch.no_grad():
            if numerics.merge:
                with_update = unmerged.merge_and_unload()(**enc, **extra).logits.float()
                without = model_class.from_pretrained(base, torch_dtype=dtype)(**enc, **extra).logits.float()
            else:
                with_update = unmerged(**enc, **extra).logits.float()
                with unmerged.disable_adapter():
                    without = unmerged(**enc, **extra).logits.float()
        return with_update - without

    reference = effect(GenerationNumerics("float32", merge=False))
    assert reference.norm() > 0 and isinstance(model, PeftModel)
    return ((effect(numerics) - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("backbone", ["t5", "llama"])
def test_default_generation_on_a_gpu_keeps_a_small_update(backbone, tiny_t5, tiny_llama, tmp_path, monkeypatch):
    """The GPU default must keep 99% of a LoRA update of 1e-3 of the weights' size (error <= 1%). bf16,
    merged or unmerged, drowns it in its own rounding (an error of several times the update: measured in
    docs/evaluation.md); bf16 was the GPU default before."""
    from rkif.generation_precision import GenerationNumerics, generation_numerics

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    base = tiny_t5 if backbone == "t5" else tiny_llama
    default = generation_numerics("auto", "cuda", backbone)
    assert small_update_error(backbone, base, tmp_path / "a", 1e-3, default) <= 0.01
    # and what the explicit choice costs: more than the update itself
    assert small_update_error(backbone, base, tmp_path / "b", 1e-3, GenerationNumerics("bfloat16", False)) > 1


def test_batched_greedy_equals_one_at_a_time(tiny_t5, bench_dir, tmp_path):
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q", "v"], task_type=TaskType.SEQ_2_SEQ_LM))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-trivial adapter: LoRA B starts at zero
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    save_adapter(model, str(tmp_path / "adapter"))
    m, tok, device = load_seq2seq_for_generation(tiny_t5, str(tmp_path / "adapter"))
    with open(os.path.join(bench_dir, "test", "sport_T5.json")) as f:
        texts = [r["input"] for r in json.load(f)]
    texts += [t[: len(t) // 3] for t in texts]  # very different lengths, so batches carry padding
    single = [greedy_seq2seq(m, tok, device, [t], max_length=24)[0] for t in texts]
    batched = []
    for i in range(0, len(texts), 5):
        batched += greedy_seq2seq(m, tok, device, texts[i:i + 5], max_length=24)
    assert batched == single
    assert len(set(single)) > 1  # the predictions actually vary


@pytest.mark.parametrize("backbone", ["t5", "llama"])
def test_generation_loads_the_base_without_initialising_it(backbone, tiny_t5, tiny_llama, tmp_path, monkeypatch):
    """Each task's generation loads the base again: initialising its weights first (random numbers over a
    7B model on the CPU, ~13.5 GB and tens of seconds a task) is work thrown away."""
    from transformers import AutoModelForCausalLM

    from rkif.causal import load_causal_for_generation

    base, model_class, task_type, targets, load = {
        "t5": (tiny_t5, AutoModelForSeq2SeqLM, TaskType.SEQ_2_SEQ_LM, ["q", "v"], load_seq2seq_for_generation),
        "llama": (tiny_llama, AutoModelForCausalLM, TaskType.CAUSAL_LM, ["q_proj", "v_proj"],
                  load_causal_for_generation)}[backbone]
    random_lora_adapter(model_class, base, tmp_path / "adapter", targets, task_type, 0.1)
    from transformers import PreTrainedModel

    filled, in_base_load = [], []
    for fill in ("uniform_", "normal_"):
        original = getattr(torch.Tensor, fill)

        def counting(self, *args, _original=original, **kwargs):
            if self.device.type != "meta" and in_base_load:
                filled.append(tuple(self.shape))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, fill, counting)
    base_load = PreTrainedModel.from_pretrained.__func__

    def counted_base_load(cls, *args, **kwargs):  # (peft's new LoRA layers are initialised: not counted)
        in_base_load.append(True)
        try:
            return base_load(cls, *args, **kwargs)
        finally:
            in_base_load.pop()

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counted_base_load))
    model, _, _ = load(base, str(tmp_path / "adapter"), "fp32")
    assert filled == [] and model is not None


def test_memory_budget_cuts_batches_by_bytes_and_predictions_do_not_change(tiny_llama, tmp_path, monkeypatch):
    """A LLaMA test split with a few long prompts: under a budget, every batch handed to generate (its recorded
    shape) fits the budget by rkif.generation_memory's bytes; by count alone the first batch, of the longest
    prompts, took several times the budget. Predictions are the same either way."""
    from transformers import AutoModelForCausalLM
    from transformers.generation.utils import GenerationMixin

    from rkif.causal import causal_predictor_factory
    from rkif.generation_memory import example_bytes

    random_lora_adapter(AutoModelForCausalLM, tiny_llama, tmp_path / "adapter", ["q_proj", "v_proj"],
                        TaskType.CAUSAL_LM, 0.3)
    words = "bright sunny day with a clear sky".split()
    records = [{"id": f"r{k}", "instruction": "What is the weather? Option: sunny, rainy.\n",
                "input": "Text: " + " ".join(words[j % len(words)] for j in range(3 + (60 if k < 4 else k % 9))),
                "output": "sunny"} for k in range(20)]
    shapes = []
    generate = GenerationMixin.generate

    def recording(self, *args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    new_tokens, batch_size = 4, 8

    def predictions(memory_gb, name):
        predict = causal_predictor_factory(tiny_llama, "fp32", cutoff_len=64, max_new_tokens=new_tokens,
                                           memory_gb=memory_gb)(str(tmp_path / "adapter"))
        shapes.clear()
        path = str(tmp_path / f"{name}.jsonl")
        write_predictions(records, predict, path, batch_size, fits=getattr(predict, "fits", None),
                          token_lengths=predict.lengths(records))
        config = AutoModelForCausalLM.from_pretrained(tiny_llama).config
        used = [b * example_bytes(config, 4, width, new_tokens) for b, width in shapes]
        return [json.loads(line)["pred"] for line in open(path)], list(shapes), used

    by_count, count_shapes, count_bytes = predictions(0.0, "count")  # CPU: no budget unless given
    assert count_shapes[0][0] == batch_size
    budget_gb = count_bytes[0] / 3 / 2 ** 30  # a third of what the first counted batch took
    budgeted, budget_shapes, budget_bytes = predictions(budget_gb, "budget")
    assert max(budget_bytes) <= budget_gb * 2 ** 30 < count_bytes[0]
    assert budget_shapes[0][0] < max(b for b, _ in budget_shapes)  # the long ones come fewer at a time
    assert sum(b for b, _ in budget_shapes) == len(records) and budgeted == by_count


def test_example_bytes_grow_with_the_square_of_the_length():
    from types import SimpleNamespace

    from rkif.generation_memory import example_bytes, largest_batch

    llama7b = SimpleNamespace(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32,
                              intermediate_size=11008, vocab_size=32000, is_encoder_decoder=False)
    one, two = (example_bytes(llama7b, 4, n, 0) - example_bytes(llama7b, 4, n - 1, 0) for n in (1024, 2048))
    assert two > one  # the per-token cost rises with the length: the L^2 term
    # by hand, one example of 2048 prompt + 128 new tokens in fp32: KV 2*32*4096*4*2176, activations
    # 2048*(4*4096+3*11008)*4, logits 2048*32000*8, attention 32*2048^2*12
    by_hand = 2 * 32 * 4096 * 4 * 2176 + 2048 * (4 * 4096 + 3 * 11008) * 4 + 2048 * 32000 * 8 + 32 * 2048 ** 2 * 12
    assert example_bytes(llama7b, 4, 2048, 128) == by_hand
    assert largest_batch(llama7b, 4, 2048, 128, 40 * 2 ** 30) == 40 * 2 ** 30 // by_hand


def test_the_pipeline_refuses_bad_generation_settings_before_training(tiny_t5, bench_dir, tmp_path, monkeypatch):
    from rkif.errors import InputError
    from rkif.pipeline import run_order

    flags = dict(base_model=tiny_t5, dataset_id=os.path.join(bench_dir, "order.json"), methods="SeqLoRA",
                 data_dir=bench_dir, output_path=str(tmp_path / "out"))
    with pytest.raises(InputError, match="--generation_memory_gb must be >= 0"):
        run_order(**flags, generation_memory_gb=-1.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(InputError, match="--gen_precision bf16: this GPU has no bfloat16 support"):
        run_order(**flags, gen_precision="bf16")
    assert not (tmp_path / "out").exists()  # nothing trained
