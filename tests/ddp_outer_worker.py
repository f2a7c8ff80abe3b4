"""The outer loop on one process, or (under `torchrun --nproc_per_node 2`) on two ranks, from the same
adapter and the same memory: run by tests/test_ddp.py, which compares what rank 0 writes to OUT.

The inner learning rate is 0, so the inner loop (whose batches differ between 1 and 2 ranks) moves
nothing; M outer steps with their own optimizer then run on memory batches drawn alike on both, and
the outer update, the outer importance and the outer losses are written out."""

import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

import rkif.loop
from rkif.compat import training_arguments
from rkif.task_files import read_json
from rkif.loop import FeatureList
from rkif.seq2seq import tokenize_seq2seq
from rkif.settings import KIFConfig
from rkif.kif_trainer import RecurrentKIFTrainer
from rkif.cli_runner import leave_process_group

model_dir, adapter, memory_file, out = sys.argv[1:5]
world = int(os.environ.get("WORLD_SIZE", 1))
tok = AutoTokenizer.from_pretrained(model_dir)
features = tokenize_seq2seq(read_json(memory_file), tok, 64, 16)
model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(model_dir), adapter, is_trainable=True)
args = training_arguments(output_dir=os.path.join(os.path.dirname(out), f"trainer{world}"),
                          per_device_train_batch_size=2, gradient_accumulation_steps=2 // world, max_steps=2,
                          learning_rate=0.0, warmup_steps=0, report_to="none", save_strategy="no", seed=11,
                          no_cuda=world > 1, xpu_backend="gloo" if world > 1 else None,
                          ddp_find_unused_parameters=False if world > 1 else None)
trainer = RecurrentKIFTrainer(
    model=model, args=args, train_dataset=FeatureList(features), memory_dataset=features,
    data_collator=DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt", padding=True),
    kif_config=KIFConfig(inner_iterations=2, outer_iterations=3, train_batch_size_outer=4, outer_optimizer="separate",
                         outer_lr=1e-2))
if world == 1:  # the draws of several ranks (the released one-process draw uses the global RNG)
    trainer.memory_generator = torch.Generator().manual_seed(args.seed)
captured = {}
fuse = rkif.loop.fuse


def fuse_and_capture(anchor, delta_in, delta_out, inner_mask, outer_mask):
    captured["delta_out"] = {n: t.detach().clone() for n, t in delta_out.items()}
    captured["delta_in"] = {n: t.detach().clone() for n, t in delta_in.items()}
    return fuse(anchor, delta_in, delta_out, inner_mask, outer_mask)


rkif.loop.fuse = fuse_and_capture
trainer.train()
if args.process_index == 0:
    history = trainer.kif_history[0]
    torch.save({**captured, "outer_sensitivity": dict(trainer.outer_tracker.sensitivity),
                "outer_losses": history["outer_losses"], "memory_indices": history["memory_indices"]}, out)
leave_process_group()  # as the scripts do: a rank left to the interpreter's exit can abort
