import json
import os

import pytest

from rkif.compat import save_adapter
from rkif.synthetic import write_synthetic_benchmark
from rkif.tiny import build_tiny_t5, corpus_from_data_dir

TASKS = ["weather", "sport", "food"]


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory):
    """Small fixture benchmark (3 tasks, 24 train / 8 dev / 8 test) and a custom order file."""
    d = str(tmp_path_factory.mktemp("bench"))
    write_synthetic_benchmark(d, TASKS, n_train=24, n_dev=8, n_test=8, seed=1)
    with open(os.path.join(d, "order.json"), "w") as f:
        json.dump(TASKS, f)
    return d


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory, bench_dir):
    d = str(tmp_path_factory.mktemp("tiny_t5"))
    return build_tiny_t5(d, corpus_from_data_dir(bench_dir), vocab_size=256, d_model=32, d_ff=64, num_heads=2)


@pytest.fixture(scope="session")
def tiny_llama(bench_dir, tmp_path_factory):
    from rkif.tiny import build_tiny_llama, llama_corpus

    return build_tiny_llama(str(tmp_path_factory.mktemp("tiny_llama")), llama_corpus(bench_dir), vocab_size=300,
                            hidden_size=32, intermediate_size=64, num_heads=2)


def random_lora_adapter(model_class, base_model, folder, targets, task_type, scale, seed=0):
    """A LoRA adapter with random A and B (peft starts B at zero, which changes nothing), saved to
    folder; returns the PeftModel."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model_class.from_pretrained(base_model),
                           LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), task_type=task_type))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    save_adapter(model, str(folder))
    return model


def cli_args(tiny_t5, bench_dir, out, task_id, method="RKIF", **extra):
    """Flags of a fast 3-task run on the fixture benchmark."""
    flags = dict(base_model=tiny_t5, data_dir=bench_dir, dataset_id=os.path.join(bench_dir, "order.json"),
                 task_id=task_id, method_name=method, output_path=out, num_epochs=2, eval_steps=3, warmup_steps=1,
                 batch_size=4, micro_batch_size=2, inner_iterations=2, outer_iterations=2, train_batch_size_outer=4,
                 memory_data_ratio=25, logging_steps=100)
    flags.update(extra)
    return [f"--{k}={v}" for k, v in flags.items()]
