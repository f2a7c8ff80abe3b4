"""The Recurrent-KIF inner/outer loop (docs/design.md, section 4) as a mixin for transformers.Trainer.

It is a mixin, importing nothing from transformers.trainer, so that both the Trainer subclass
(rkif.kif_trainer) and the patched transformers.Trainer of patches/ use this one implementation.
The ordinary training loop is the inner loop. Two hooks into the stock 4.28.1 loop suffice:
- an optimizer step post-hook updates the inner importance tracker after every optimizer
  step, while the accumulated, clipped gradients are still there (the Trainer zeroes them
  right after the LR scheduler step);
- a callback's on_step_end, which runs after the global step is incremented and before
  logging, evaluation and checkpointing, runs the M outer steps and the fusion every K steps,
  so checkpoints hold fused parameters.
Saving and resuming through adapter checkpoints is rkif.checkpoints; here only the KIF state
that a checkpoint carries besides them.
"""

import contextlib
import hashlib
import os
import time
from dataclasses import asdict

import torch
from transformers.optimization import get_linear_schedule_with_warmup
from transformers.trainer_callback import TrainerCallback

from . import compat
from .adapters import lora_parameters
from .checkpoints import AdapterCheckpointMixin
from .fusion import fuse, fusion_statistics, global_mask, global_threshold
from .importance import ImportanceTracker
from .plain_data import load_plain
from .sampling import memory_batch_indices
from .settings import KIFConfig

KIF_STATE = "kif_state_{}.pt"  # one per rank: under DDP the memory sampler differs between ranks


class FeatureList(torch.utils.data.Dataset):
    """Tokenized features handed out as fresh dicts.

    transformers' DataCollatorForSeq2Seq pads labels by reassigning them inside the feature dict it
    is given; with a plain list the stored features would grow by one padding per use (longer than
    their inputs, which breaks causal LMs in the second epoch or the second memory batch).
    """

    def __init__(self, features):
        self.features = list(features or [])

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return dict(self.features[i])


class RecurrentKIFMixin(AdapterCheckpointMixin):
    """Recurrent-KIF loop for a transformers.Trainer; plain Trainer behaviour when ``memory_dataset`` is empty.

    memory_dataset: list of tokenized features (what the data collator takes) of earlier tasks.
    Adapters, not full models, are what checkpoints save and best-model selection reloads.
    """

    def __init__(self, *args, kif_config=None, memory_dataset=None, **kwargs):
        super().__init__(*args, **kwargs)
        compat.use_released_loss_scaling(self)
        self.kif = kif_config or KIFConfig()
        self.memory_dataset = FeatureList(memory_dataset)
        self.kif_enabled = len(self.memory_dataset) > 0
        self.inner_tracker = ImportanceTracker(self.kif.beta1, self.kif.beta2)
        self.outer_tracker = ImportanceTracker(self.kif.beta1, self.kif.beta2)
        self.anchor = None
        self.outer_optimizer = None
        self.outer_scheduler = None
        self.kif_history = []  # one entry per fusion: step, memory indices drawn, outer losses
        self._in_outer_loop = False
        self._outer_chunk_weight = None  # share of the memory batch's label tokens in the current chunk
        self._pending_fusions = []  # statistics of the fusions since the last log line
        self._step_hook = None
        # One process draws memory batches from the global torch RNG, as released (sampling.py). Under
        # DDP the ranks' global RNGs part ways (dropout draws), so every rank draws the same batch from a
        # generator seeded alike and takes its own share of it (draw_memory_batch): the outer batch, and
        # with the token weights of _outer_forward_backward its gradient, are one GPU's.
        self.memory_generator = None
        if self.args.world_size > 1:
            if self.kif.train_batch_size_outer % self.args.world_size:
                raise ValueError(f"train_batch_size_outer {self.kif.train_batch_size_outer} is split over the "
                                 f"{self.args.world_size} ranks: it must be a multiple of the world size")
            self.memory_generator = torch.Generator().manual_seed(self.args.seed)
        if self.kif_enabled:
            self.add_callback(_RecurrentKIFCallback(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # num_items_in_batch (5.x) is not passed on: the loss is each micro-batch's mean over its own label
        # tokens, as released (rkif.compat.divided_for_accumulation)
        labels = inputs.get("labels")
        result = super().compute_loss(model, inputs, return_outputs=return_outputs)
        if labels is None:
            return result
        loss, outputs = result if return_outputs else (result, None)
        # A batch with no label token (every example's prompt fills the cutoff under a rule that
        # keeps no response token) has a 0/0 mean loss, NaN, which would distort the logged loss
        # and make eval_loss, and so the best-checkpoint choice, NaN. It has nothing to learn:
        # count it as 0 (its gradient is zero either way). torch.where keeps any other loss bitwise
        # and needs no host sync.
        loss = torch.where((labels != -100).any(), loss, torch.zeros_like(loss))
        if model.training:
            loss = compat.divided_for_accumulation(self, loss)
        if self._outer_chunk_weight is not None:
            loss = loss * self._outer_chunk_weight
        return (loss, outputs) if return_outputs else loss

    # --- inner loop --------------------------------------------------------------------

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.kif_enabled and self._step_hook is None:
            self._step_hook = optimizer.register_step_post_hook(self._after_optimizer_step)
        return optimizer

    def _after_optimizer_step(self, optimizer, args, kwargs):
        if not self._in_outer_loop:
            self.inner_tracker.update(self.model.named_parameters())

    def _kif_begin(self):
        """Start of a task: fresh trackers, anchor = theta; or, when resuming, the checkpoint's KIF state."""
        self.inner_tracker.reset()
        self.outer_tracker.reset()
        self.anchor = _snapshot(lora_parameters(self.model))
        if not self.anchor:
            raise RuntimeError("Recurrent-KIF found no trainable LoRA parameters (names containing 'lora_')")
        if self.kif.outer_optimizer == "separate":
            # Own AdamW at outer_lr; its linear schedule counts outer steps and does advance
            # (the released LLaMA recipe's outer learning rate stayed at 0).
            K, M = self.kif.inner_iterations, self.kif.outer_iterations
            total = max(1, self.state.max_steps // K * M)
            self.outer_optimizer = torch.optim.AdamW(
                list(lora_parameters(self.model).values()), lr=self.kif.outer_lr, weight_decay=self.args.weight_decay
            )
            self.outer_scheduler = get_linear_schedule_with_warmup(
                self.outer_optimizer, round(self.args.get_warmup_steps(self.state.max_steps) * M / K), total
            )
        if self._resumed_from is not None:
            self._load_kif_state(self._resumed_from)

    def _kif_state_path(self, checkpoint):
        return os.path.join(checkpoint, KIF_STATE.format(self.args.process_index))

    def _save_kif_state(self, checkpoint):
        state = {
            "anchor": self.anchor,
            "inner_tracker": self.inner_tracker.state_dict(),
            "outer_tracker": self.outer_tracker.state_dict(),
            "memory_generator": None if self.memory_generator is None else self.memory_generator.get_state(),
            "kif_history": [_on_host(h) for h in self.kif_history],
            "global_step": self.state.global_step,
        }
        if self.outer_optimizer is not None:
            state["outer_optimizer"] = self.outer_optimizer.state_dict()
            state["outer_scheduler"] = self.outer_scheduler.state_dict()
        torch.save(state, self._kif_state_path(checkpoint))

    def _load_kif_state(self, checkpoint):
        path = self._kif_state_path(checkpoint)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing: this checkpoint holds no Recurrent-KIF state for rank {self.args.process_index} "
                "(was it written with another number of processes?), so the task cannot resume exactly"
            )
        state = load_plain(path)
        if state["global_step"] != self.state.global_step:
            raise RuntimeError(f"{path} is for step {state['global_step']}, the Trainer resumed at "
                               f"{self.state.global_step}")
        # each tensor on its own parameter's device: the patched-Trainer route loads with
        # device_map="auto", which spreads layers over GPUs
        params = dict(self.model.named_parameters())
        self.anchor = on_parameter_devices(state["anchor"], params)
        for tracker, key in ((self.inner_tracker, "inner_tracker"), (self.outer_tracker, "outer_tracker")):
            tracker.load_state_dict(on_parameter_devices(state[key], params))
        if self.memory_generator is not None:  # otherwise the Trainer restores the global RNG itself
            self.memory_generator.set_state(state["memory_generator"])
        self.kif_history = list(state["kif_history"])
        if self.outer_optimizer is not None:
            self.outer_optimizer.load_state_dict(state["outer_optimizer"])
            self.outer_scheduler.load_state_dict(state["outer_scheduler"])

    def _save_extra_state(self, checkpoint):
        if self.kif_enabled:
            self._save_kif_state(checkpoint)

    @property
    def extra_checkpoint_files(self):
        return (KIF_STATE,) if self.kif_enabled else ()

    # --- outer loop and fusion ---------------------------------------------------------

    def draw_memory_batch(self):
        """(the indices of the outer batch, this rank's share of it collated). One process takes the whole
        batch; rank r of W takes the r-th of W equal, consecutive parts."""
        indices = memory_batch_indices(len(self.memory_dataset), self.kif.train_batch_size_outer,
                                       self.memory_generator)
        share = len(indices) // self.args.world_size
        mine = indices[self.args.process_index * share:(self.args.process_index + 1) * share]
        return indices, self.data_collator([self.memory_dataset[i] for i in mine])

    def outer_step(self, batch):
        """One outer step on a memory batch: the ordinary training loss (training mode, divided by
        the accumulation steps), clip, optimizer step, outer tracker update. Returns the loss."""
        model = self.model_wrapped
        optimizer = compat.raw_optimizer(self.optimizer if self.kif.outer_optimizer == "shared"
                                         else self.outer_optimizer)
        scaler = compat.grad_scaler(self)
        self._in_outer_loop = True
        try:
            loss = self._outer_forward_backward(model, batch)
            if self.args.max_grad_norm is not None and self.args.max_grad_norm > 0:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            # A step with an inf or NaN gradient (the one the gradient scaler skips) neither enters the
            # outer importance nor advances the separate outer schedule; the tracker's one fused
            # finiteness check decides both.
            finite = self.outer_tracker.update(self.model.named_parameters())
            if self.outer_scheduler is not None and finite:
                self.outer_scheduler.step()
            model.zero_grad()
        finally:
            self._in_outer_loop = False
        return loss  # a tensor: read once per fusion, not once per outer step

    def _outer_forward_backward(self, model, batch):
        """The memory batch's loss and gradients: in one pass (released), or with outer_micro_batch_size
        in chunks, or under DDP in each rank's share: each part's loss is weighted by its share of the whole
        batch's label tokens (summed over the ranks), so that the accumulated, all-reduced gradient is the
        one big batch's on one GPU (to float precision) at a fraction of the memory per forward."""
        chunk = int(self.kif.outer_micro_batch_size)
        size = len(batch["input_ids"])
        world = self.args.world_size
        if world == 1 and (not chunk or chunk >= size):
            return self.training_step(model, batch)
        chunk = chunk if 0 < chunk < size else size
        labels = batch["labels"]
        if not getattr(self.model.config, "is_encoder_decoder", False):
            labels = labels.narrow(1, 1, labels.shape[1] - 1)  # a causal LM predicts token i from those before
        counts = (labels != -100).sum(dim=1)
        total = counts.sum()
        if world > 1:
            # DDP averages the ranks' gradients, and training_step divided by the per-rank accumulation
            # (1/W of one GPU's): a weight of tokens/all tokens per rank makes the sum one GPU's mean
            total = total.to(self.args.device)
            torch.distributed.all_reduce(total)
        tokens, total = counts.tolist(), max(int(total.item()), 1)
        loss = 0.0
        try:  # host sync: one per outer step, and only when chunking or under DDP
            for start in range(0, size, chunk):
                n = min(chunk, size - start)
                part = {k: v.narrow(0, start, n) if torch.is_tensor(v) and len(v) == size else v
                        for k, v in batch.items()}
                self._outer_chunk_weight = sum(tokens[start:start + n]) / total
                last = start + n >= size
                sync = model.no_sync() if not last and hasattr(model, "no_sync") else contextlib.nullcontext()
                with sync:  # under DDP the gradients are averaged once, after the last chunk
                    loss = loss + self.training_step(model, part)
        finally:
            self._outer_chunk_weight = None
        return loss

    def recurrent_step(self):
        """M outer steps from theta_k, then fuse the inner and outer updates into theta."""
        params = lora_parameters(self.model)
        theta_k = _snapshot(params)
        drawn, losses = [], []
        started = _clock()
        for _ in range(self.kif.outer_iterations):
            indices, batch = self.draw_memory_batch()
            drawn.append(indices)
            losses.append(self.outer_step(batch))
        # Logged and recorded as the model's loss, comparable with the ordinary training loss (under DDP each
        # rank holds its token-weighted part of it: their sum is the batch's).
        losses = torch.stack([torch.as_tensor(v).to(self.args.device) for v in losses])
        if self.args.world_size > 1:
            torch.distributed.all_reduce(losses)
        losses = [v * self.args.gradient_accumulation_steps for v in losses.tolist()]
        outer_done = _clock()
        with torch.no_grad():
            delta_in = {n: theta_k[n] - self.anchor[n] for n in params}
            delta_out = {n: params[n].detach() - theta_k[n] for n in params}
            inner_scores, outer_scores = self.inner_tracker.scores(), self.outer_tracker.scores()
            tau_in = global_threshold(inner_scores, self.kif.quantile)
            tau_out = global_threshold(outer_scores, self.kif.quantile)
            inner_mask = global_mask(inner_scores, self.kif.quantile, tau_in)
            outer_mask = global_mask(outer_scores, self.kif.quantile, tau_out)
            fused = fuse(self.anchor, delta_in, delta_out, inner_mask, outer_mask)
            for n, p in params.items():
                p.copy_(fused[n])
        self.anchor = _snapshot(params)
        if self.kif.empty_inner_score_flag:
            self.inner_tracker.reset()
        if self.kif.empty_outer_score_flag:
            self.outer_tracker.reset()
        stats = {"outer_loss": sum(losses) / len(losses),
                 **fusion_statistics(delta_in, delta_out, inner_mask, outer_mask),
                 "tau_inner": tau_in, "tau_outer": tau_out,  # device tensors until logged or saved
                 "outer_seconds": outer_done - started, "fusion_seconds": _clock() - outer_done}
        entry = {"global_step": self.state.global_step, "memory_indices": drawn, "outer_losses": losses,
                 "learning_rate": self.optimizer.param_groups[0]["lr"], "stats": stats}
        if self.args.world_size > 1:  # lets a check compare the ranks' weights after every fusion
            entry["lora_sha256"] = _digest(params)
        self.kif_history.append(entry)
        self._pending_fusions.append(stats)

    def kif_summary(self):
        return {
            "enabled": self.kif_enabled,
            "memory_size": len(self.memory_dataset),
            "fusions": len(self.kif_history),
            "outer_steps": sum(len(h["outer_losses"]) for h in self.kif_history),
            "inner_nonfinite_skips": self.inner_tracker.nonfinite_skips,
            "outer_nonfinite_skips": self.outer_tracker.nonfinite_skips,
            "fusion_history": self.fusion_history(),
            **{f"kif_{k}": v for k, v in asdict(self.kif).items()},
        }

    def fusion_history(self):
        """Per fusion: step, outer loss, mask-case shares, thresholds, update norms, seconds."""
        return [{"global_step": h["global_step"], **{k: _round(v) for k, v in h["stats"].items()}}
                for h in self.kif_history if "stats" in h]

    def log(self, logs, *args, **kwargs):
        # What the fusions since the last log line did rides along with the ordinary training loss
        # (one fusion per line when logging_steps <= K): outer_loss, and kif/* for TensorBoard or W&B.
        if self._pending_fusions and "loss" in logs:
            pending, self._pending_fusions = self._pending_fusions, []
            logs["outer_loss"] = round(sum(p["outer_loss"] for p in pending) / len(pending), 4)
            for key in pending[-1]:
                values = [p[key] for p in pending if p[key] is not None]
                if values and key != "outer_loss":
                    logs[f"kif/{key}"] = _round(sum(values) / len(values))
        super().log(logs, *args, **kwargs)


class _RecurrentKIFCallback(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._kif_begin()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.trainer.kif.inner_iterations == 0:
            self.trainer.recurrent_step()


def on_parameter_devices(value, params, name=None):
    """value (nested dicts whose tensors are keyed by parameter names) with each tensor on its parameter's device;
    anything else as it is."""
    if isinstance(value, dict):
        return {k: on_parameter_devices(v, params, k) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and name in params:
        return value.to(params[name].device)
    return value


def _clock():
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: time what it did, not what it queued
    return time.perf_counter()


def _round(value):
    return value if value is None else float(f"{float(value):.6g}")


def _on_host(entry):
    """A kif_history entry with its statistics as Python numbers (they stay on the device from the
    fusion until they are logged or saved, so that the fusion itself does not wait for the GPU)."""
    if "stats" not in entry:
        return entry
    return {**entry, "stats": {k: v.item() if torch.is_tensor(v) else v for k, v in entry["stats"].items()}}


def _digest(params):
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(params[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _snapshot(params):
    return {n: p.detach().clone() for n, p in params.items()}
