"""Run by tests/test_ddp.py under `torchrun --nproc_per_node 2`: tasks 0 and 1 of each method in METHODS (comma-
separated; a method trained once on all tasks, MTL, trains its one task) with the real training script of
BACKBONE (t5 | llama, LLaMA with its default gradient checkpointing)."""

import sys

from rkif.training import TRAIN
from rkif.methods import get_method
from rkif.cli_runner import leave_process_group

backbone, methods, model, data, order, out = sys.argv[1:7]
train = TRAIN[backbone]
extra = {} if backbone == "t5" else {"cutoff_len": 128}
for method in methods.split(","):
    for task_id in get_method(method).trained_task_ids(3)[:2]:  # tasks 0 and 1; MTL its one task, 2
        train(base_model=model, data_dir=data, dataset_id=order, task_id=task_id, output_path=out, method_name=method,
              num_epochs=1, batch_size=8, micro_batch_size=2, inner_iterations=2, outer_iterations=2,
              train_batch_size_outer=4, memory_data_ratio=25, val_set_size=0, warmup_steps=1, logging_steps=100,
              **extra)
leave_process_group()  # as the scripts do: a rank left to the interpreter's exit can abort
