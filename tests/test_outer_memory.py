"""The outer step's memory: --outer_micro_batch_size splits the memory batch into chunks whose
gradients add up to the whole batch's (the released single pass stays the default), and gradient
checkpointing is on where it is the default (LLaMA) and off where it is not (T5)."""

import json
import os
import shutil

import torch

from conftest import cli_args
from rkif.commands import entry_points
from rkif.kif_trainer import RecurrentKIFTrainer

main = entry_points.train_t5


def outer_sizes(monkeypatch):
    """Batch sizes that reach the model's forward in outer steps."""
    seen = []
    original = RecurrentKIFTrainer.training_step

    def recording(self, model, inputs, *args):
        if self._in_outer_loop:
            seen.append(len(inputs["input_ids"]))
        return original(self, model, inputs, *args)

    monkeypatch.setattr(RecurrentKIFTrainer, "training_step", recording)
    return seen


def test_chunked_outer_batches_give_the_whole_batchs_adapter(tiny_t5, bench_dir, tmp_path, monkeypatch):
    # without dropout (base and LoRA): its masks are drawn per forward, so chunks draw other ones
    model = str(tmp_path / "tiny_t5_no_dropout")
    shutil.copytree(tiny_t5, model)
    config = json.load(open(os.path.join(model, "config.json")))
    json.dump({**config, "dropout_rate": 0.0}, open(os.path.join(model, "config.json"), "w"))
    tiny_t5 = model
    base = str(tmp_path / "base")
    main(cli_args(tiny_t5, bench_dir, base, 0, val_set_size=0, lora_dropout=0.0))
    adapters, sizes = {}, {}
    for chunk in (0, 3):
        out = str(tmp_path / f"chunk{chunk}")
        shutil.copytree(base, out)
        seen = outer_sizes(monkeypatch)
        main(cli_args(tiny_t5, bench_dir, out, 1, val_set_size=0, lora_dropout=0.0, outer_micro_batch_size=chunk))
        monkeypatch.undo()
        task = os.path.join(out, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order", "1-sport")
        adapters[chunk] = torch.load(os.path.join(task, "adapter_model.bin"))
        info = json.load(open(os.path.join(task, "run_info.json")))
        assert info["gradient_checkpointing"] is False and info["kif"]["kif_outer_micro_batch_size"] == chunk
        assert 0.1 < info["peak_host_memory_gib"] < 24  # this process's peak RAM: a model, not nothing
        sizes[chunk] = seen
    fusions = len(sizes[0])
    assert fusions > 0 and sizes[0] == [4] * fusions  # B_out 4 in one pass
    assert sizes[3] == [3, 1] * fusions  # no forward above 3
    assert adapters[0].keys() == adapters[3].keys()
    for k in adapters[0]:
        torch.testing.assert_close(adapters[3][k], adapters[0][k], rtol=1e-5, atol=1e-6)
