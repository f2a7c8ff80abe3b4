"""Run by tests/test_ddp.py under `torchrun --nproc_per_node 2`: two tasks with the real T5 script.

After every fusion each rank hashes its LoRA weights; the hashes of all ranks are gathered and
rank 0 appends them to FUSIONS (one JSON line per fusion) for the test to compare.
"""

import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch

import rkif.kif_trainer
from rkif.training import TRAIN

from rkif.adapters import lora_parameters
from rkif.cli_runner import leave_process_group

train = TRAIN["t5"]

model, data, order, out, fusions = sys.argv[1:6]
original = rkif.kif_trainer.RecurrentKIFTrainer.recurrent_step


def recurrent_step_with_checksum(self):
    original(self)
    h = hashlib.sha256()
    for name, p in sorted(lora_parameters(self.model).items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    digests = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(digests, (self.state.global_step, h.hexdigest()))
    if torch.distributed.get_rank() == 0:
        with open(fusions, "a") as f:
            f.write(json.dumps(digests) + "\n")


rkif.kif_trainer.RecurrentKIFTrainer.recurrent_step = recurrent_step_with_checksum
for task_id in (0, 1):
    train(base_model=model, data_dir=data, dataset_id=order, task_id=task_id, output_path=out, num_epochs=2,
          batch_size=8, micro_batch_size=2, inner_iterations=2, outer_iterations=2, train_batch_size_outer=4,
          memory_data_ratio=25, eval_steps=2, warmup_steps=1, logging_steps=100)
leave_process_group()  # as the scripts do: a rank left to the interpreter's exit can abort
