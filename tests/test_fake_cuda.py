"""GPU code paths, proven on CPU.

torch's FakeTensorMode gives tensors on a fake `cuda` device: a CPU tensor meeting one raises the
real "Expected all tensors to be on the same device" error, and a host sync (`.item()`, `bool()`)
raises DataDependentOutputException. The model's LoRA tensors are put there as the Trainer's
`model.to("cuda")` would leave them, after each method's set-up ran on the CPU.
"""

import json
import os
import random
import types
import weakref
from contextlib import contextmanager

import numpy as np
from rkif.compat import STACK, save_adapter
import pytest
import torch
from peft import TaskType
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from rkif.adapters import lora_parameters
from rkif.checkpoints import AdapterCheckpointMixin
from rkif.errors import InputError
from rkif.fusion import fuse, fusion_statistics, global_mask, global_threshold
from rkif.importance import ImportanceTracker
from rkif.lora import new_lora_model
from rkif.loop import KIF_STATE, RecurrentKIFMixin
from rkif.methods import METHOD_NAMES, get_method
from rkif.seq2seq import tokenize_seq2seq
from rkif.settings import built
from rkif.task_files import read_json
from rkif.training import TRAIN, LoRAShape

SETTINGS = {"lambda_orth": 0.5, "lambda_l2": 0.1, "ewc_lambda": 100.0, "ewc_fisher": "per_example"}


@contextmanager
def fake_cuda():
    # no_grad throughout: on a CPU build, autograd on a fake CUDA tensor aborts the process
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        yield


def cuda_like(t):
    return torch.empty(t.shape, dtype=t.dtype, device="cuda")


def to_fake_cuda(model):
    """Inside fake_cuda(): every parameter on cuda, as the Trainer's model.to("cuda") leaves them (new
    Parameter objects, since a CPU tensor cannot move to a fake device; the hooks that the set-up put
    on the old ones are called directly)."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(cuda_like(p), requires_grad=p.requires_grad)
    return model


def test_fake_cuda_raises_what_a_gpu_would():
    with fake_cuda():
        x = torch.empty(3, device="cuda")
        with pytest.raises(RuntimeError, match="same device"):
            x * torch.ones(3)
        with pytest.raises(DataDependentOutputException):
            x.sum().item()


@pytest.fixture(scope="module")
def task0(tiny_t5, tmp_path_factory):
    """Task 0's adapter (r 4 on q, v) and an EWC state beside it, as the methods leave them."""
    folder = str(tmp_path_factory.mktemp("task0"))
    model = new_lora_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), r=4, alpha=8, dropout=0.0,
                           target_modules=["q", "v"], task_type=TaskType.SEQ_2_SEQ_LM)
    save_adapter(model, folder)
    params = lora_parameters(model)
    torch.save({"fisher": {n: torch.rand(p.shape) for n, p in params.items()},
                "theta_prev": {n: p.detach().clone() for n, p in params.items()},
                "fisher_estimate": "per_example"}, os.path.join(folder, "ewc_state.pt"))
    return folder


def t5_batch(tiny_t5, bench_dir):
    """Two training examples of the fixture benchmark, collated on the CPU."""
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    records = read_json(os.path.join(bench_dir, "train", "sport_T5.json"))[:2]
    return DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt")(tokenize_seq2seq(records, tok, 32, 8))


def set_up(method, tiny_t5, previous):
    plan = types.SimpleNamespace(task_id=1, previous_adapter=previous)
    m = get_method(method)
    return m.build(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), plan,
                   LoRAShape(4, 8, 0.0, ["q", "v"], TaskType.SEQ_2_SEQ_LM), built(TRAIN["t5"].groups, SETTINGS))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_at_task_1_on_cuda(method, tiny_t5, task0, bench_dir):
    """Extra-loss terms on a batch and its outputs, gradient hooks, a method's step tracker, one importance
    update and one fusion with the model on cuda."""
    model, extra_loss = set_up(method, tiny_t5, task0 if get_method(method).starts_from_previous(1) else None)
    hooks = {n: list(p._backward_hooks.values()) for n, p in lora_parameters(model).items()
             if getattr(p, "_backward_hooks", None)}
    assert bool(hooks) == (method in ("OLoRA", "IncLoRA"))  # the earlier branches are frozen by hooks
    shapes = {n: p.shape for n, p in lora_parameters(model).items()}
    batch = t5_batch(tiny_t5, bench_dir)
    with fake_cuda():
        for name, fns in hooks.items():
            for fn in fns:
                assert fn(torch.empty(shapes[name], device="cuda")).device.type == "cuda"
        to_fake_cuda(model)
        params = lora_parameters(model)
        assert all(p.device.type == "cuda" for p in params.values())
        if extra_loss is not None:
            device = next(iter(params.values())).device  # a real tensor moves to the fake device, not to "cuda"
            batch = {k: v.to(device) for k, v in batch.items()}
            # the model's own forward does not run on a fake device of a CPU build: a stand-in gives cuda logits,
            # to the student and to any teacher forward a method makes
            logits = torch.empty(*batch["labels"].shape, model.config.vocab_size, device=device)
            model.forward = lambda **kwargs: types.SimpleNamespace(logits=logits * 1.0)
            assert extra_loss(model, batch, model(**batch)).device.type == "cuda"
        tracker = get_method(method).step_tracker(built(TRAIN["t5"].groups, SETTINGS))
        for p in params.values():
            p.grad = cuda_like(p)
        inner, outer = ImportanceTracker(), ImportanceTracker()
        assert inner.update(model.named_parameters()).device.type == "cuda"  # no host sync, or it would raise
        if tracker is not None:
            tracker.update(model, 1)
            assert all(t.device.type == "cuda" for t in tracker.table().values())
        outer.update(model.named_parameters())
        anchor = {n: cuda_like(p) for n, p in params.items()}
        theta_k = {n: cuda_like(p) for n, p in params.items()}
        delta_in = {n: theta_k[n] - anchor[n] for n in params}
        delta_out = {n: params[n].detach() - theta_k[n] for n in params}
        inner_mask = global_mask(inner.scores(), 0.8, global_threshold(inner.scores(), 0.8))
        outer_mask = global_mask(outer.scores(), 0.8, global_threshold(outer.scores(), 0.8))
        fused = fuse(anchor, delta_in, delta_out, inner_mask, outer_mask)
        stats = fusion_statistics(delta_in, delta_out, inner_mask, outer_mask)
        assert all(t.device.type == "cuda" for t in [*fused.values(), *stats.values()])


def test_the_loop_itself_runs_on_cuda_with_one_host_read_per_fusion(tiny_t5, task0, monkeypatch):
    """The Trainer's own code under fake CUDA: the optimizer hook (inner importance), two outer steps (clip,
    optimizer step, outer importance; the forward/backward stands in, as autograd cannot run on a fake
    device) and the fusion of recurrent_step. Every threshold, mask, statistic and weight stays on cuda (a
    .cpu() in the quantile would put tau on the CPU, which a 0-dim comparison would not catch), and the one
    host read of a fusion is its outer losses."""
    from rkif.loop import _snapshot
    from rkif.settings import KIFConfig
    from torch._subclasses.fake_tensor import FakeTensor

    model, _ = set_up("RKIF", tiny_t5, task0)
    host_reads = []

    def counted_tolist(self):  # a fake tensor has no values: count the read, give zeros
        host_reads.append(tuple(self.shape))
        return [0.0] * self.numel()

    monkeypatch.setattr(FakeTensor, "tolist", counted_tolist)
    # copy_ between fake cuda tensors fails on a CPU build of torch; an in-place add is the same write (and
    # stricter: it refuses a source on another device, which copy_ would move)
    monkeypatch.setattr(FakeTensor, "copy_", lambda self, source, non_blocking=False: self.mul_(0).add_(source))
    with fake_cuda():
        to_fake_cuda(model)
        params = lora_parameters(model)
        trainer = RecurrentKIFMixin.__new__(RecurrentKIFMixin)
        trainer.model = trainer.model_wrapped = model
        trainer.kif = KIFConfig(outer_iterations=2, quantile=0.8)
        trainer.args = types.SimpleNamespace(device=torch.device("cuda:0"), world_size=1, process_index=0,
                                             gradient_accumulation_steps=2, max_grad_norm=1.0)
        trainer.state = types.SimpleNamespace(global_step=8)
        trainer.optimizer = torch.optim.SGD(list(params.values()), lr=0.1)
        trainer.outer_optimizer = trainer.outer_scheduler = None
        trainer.do_grad_scaling, trainer.accelerator = False, types.SimpleNamespace(scaler=None)
        trainer._in_outer_loop = False
        trainer.inner_tracker, trainer.outer_tracker = ImportanceTracker(), ImportanceTracker()
        trainer.kif_history, trainer._pending_fusions = [], []
        trainer.anchor = _snapshot(params)

        def outer_forward_backward(model, batch):
            for p in params.values():
                p.grad = cuda_like(p)
            return torch.empty((), device="cuda")

        trainer._outer_forward_backward = outer_forward_backward
        trainer.draw_memory_batch = lambda: ([0, 1], {})
        for p in params.values():
            p.grad = cuda_like(p)
        trainer._after_optimizer_step(trainer.optimizer, (), {})
        inner = list(trainer.inner_tracker.sensitivity.values())  # emptied by the fusion (empty_inner_score_flag)
        trainer.recurrent_step()
        stats = trainer.kif_history[-1]["stats"]
        on_cuda = [*params.values(), *trainer.anchor.values(), *inner,
                   *trainer.outer_tracker.uncertainty.values(), stats["tau_inner"], stats["tau_outer"],
                   *(v for k, v in stats.items() if k.startswith(("share", "norm")))]
        assert all(t.device.type == "cuda" for t in on_cuda), [t.device for t in on_cuda]
    assert inner and trainer.outer_tracker.sensitivity and len(trainer.kif_history) == 1
    assert host_reads == [(2,)]  # the two outer losses, read once


def test_kif_state_follows_each_parameters_device(tmp_path):
    """device_map="auto" spreads layers over GPUs: each tensor of a resumed KIF state goes to its own
    parameter's device (here cpu and meta stand for two GPUs)."""
    model = torch.nn.Module()
    model.a_lora_A = torch.nn.Parameter(torch.ones(2, 3))
    model.b_lora_B = torch.nn.Parameter(torch.ones(3, 2, device="meta"))
    names = ["a_lora_A", "b_lora_B"]
    tracker = {"sensitivity": {n: torch.ones(2) for n in names}, "uncertainty": {n: torch.ones(2) for n in names},
               "num_updates": 3, "nonfinite_skips": 0}
    torch.save({"anchor": {n: torch.zeros(2) for n in names}, "inner_tracker": tracker, "outer_tracker": tracker,
                "memory_generator": None, "kif_history": [], "global_step": 8}, tmp_path / KIF_STATE.format(0))
    trainer = types.SimpleNamespace(model=model, args=types.SimpleNamespace(process_index=0),
                                    state=types.SimpleNamespace(global_step=8), inner_tracker=ImportanceTracker(),
                                    outer_tracker=ImportanceTracker(), memory_generator=None, outer_optimizer=None)
    trainer._kif_state_path = lambda c: os.path.join(c, KIF_STATE.format(0))
    RecurrentKIFMixin._load_kif_state(trainer, str(tmp_path))
    expected = {"a_lora_A": "cpu", "b_lora_B": "meta"}
    assert {n: t.device.type for n, t in trainer.anchor.items()} == expected
    for tr in (trainer.inner_tracker, trainer.outer_tracker):
        assert {n: t.device.type for n, t in tr.sensitivity.items()} == expected
        assert {n: t.device.type for n, t in tr.uncertainty.items()} == expected


def test_one_process_seeing_two_gpus_is_refused(tiny_t5, bench_dir, tmp_path, monkeypatch, capsys):
    from rkif.commands import entry_points
    main = entry_points.train_t5

    from conftest import cli_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(SystemExit) as e:
        main(cli_args(tiny_t5, bench_dir, str(tmp_path / "out"), 0))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "this process sees 2 GPUs (CUDA_VISIBLE_DEVICES=0,1)" in err
    assert "torchrun --nproc_per_node 2" in err and not (tmp_path / "out").exists()


def test_each_torchrun_rank_takes_its_gpu_before_the_model_loads(tiny_t5, bench_dir, tmp_path, monkeypatch):
    """Rank 3 of 4 through the training command: its GPU is chosen before the model (and a saved adapter,
    which peft 0.4.0 puts on the current device) is loaded."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

    from rkif.commands import entry_points
    main = entry_points.train_t5

    from conftest import cli_args

    events = []

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        events.append("model loaded")
        raise Loaded

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: events.append(f"set_device {d}"))
    monkeypatch.setattr(AutoModelForSeq2SeqLM, "from_pretrained", load)
    for name, value in (("WORLD_SIZE", "4"), ("LOCAL_RANK", "3"), ("RANK", "3")):
        monkeypatch.setenv(name, value)
    with pytest.raises(Loaded):
        main(cli_args(tiny_t5, bench_dir, str(tmp_path / "out"), 0, train_batch_size_outer=8, batch_size=8))
    assert events == ["set_device 3", "model loaded"]


PEFT_0_4_ONLY = pytest.mark.skipif(STACK != "pinned", reason="peft 0.4.0's limits (the pinned stack)")


@pytest.mark.parametrize("capability, version, precision, message", [
    pytest.param((9, 0), "0.44.1", "auto", "does not work on this GPU (compute capability 9.0, Hopper or newer)",
                 marks=PEFT_0_4_ONLY),
    pytest.param((8, 0), "0.45.0", "auto", "peft 0.4.0 reads memory_efficient_backward, which bitsandbytes removed "
                 "in 0.45.0", marks=PEFT_0_4_ONLY),
    ((8, 0), "0.41.1", "bf16", "--load_8bit with --precision bf16: 8-bit layers compute in fp16"),
])
def test_load_8bit_refused_where_it_cannot_work(capability, version, precision, message, monkeypatch):
    import importlib.metadata
    import importlib.util

    from rkif.backbones import check_8bit

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else None)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_8bit(precision)


def test_load_8bit_accepted_before_hopper_with_an_old_bitsandbytes(monkeypatch):
    import importlib.metadata
    import importlib.util

    from rkif.backbones import check_8bit

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.41.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    check_8bit("auto")
    if STACK == "current":  # peft 0.2x: Hopper and a new bitsandbytes are fine
        monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.49.0")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
        check_8bit("auto")


def test_resume_with_fewer_gpus_than_at_save_time_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state(),
                "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}, tmp_path / "rng_state.pth")

    def fewer_gpus(states):
        raise IndexError("list index out of range")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state_all", fewer_gpus)
    trainer = types.SimpleNamespace(args=types.SimpleNamespace(process_index=0, world_size=1, local_rank=-1))
    before = torch.random.get_rng_state()
    torch.rand(3)
    AdapterCheckpointMixin._load_rng_state(trainer, str(tmp_path))
    assert torch.equal(torch.random.get_rng_state(), before)  # the CPU state is restored all the same
    assert "warning: the GPU random states of" in capsys.readouterr().err


def test_generation_frees_the_previous_model_before_loading_the_next(tiny_t5, bench_dir, tmp_path):
    from rkif.run_folders import adapter_dir
    from rkif.prediction_folders import run_generation

    out = str(tmp_path / "out")
    tasks = ["weather", "sport", "food"]
    for t, task in enumerate(tasks):
        d = adapter_dir(out, tiny_t5, "RKIF", "order", t, task)
        os.makedirs(d)
        open(os.path.join(d, "adapter_model.bin"), "wb").close()
    alive = []

    class Model:  # stands for a 7B model: the next one may only load once this one is gone
        pass

    def make_predictor(adapter):
        assert all(ref() is None for ref in alive), "the previous adapter's model is still resident"
        model = Model()
        alive.append(weakref.ref(model))
        return lambda records: [type(model).__name__ for _ in records]

    run_generation(kind="bwt", tasks=tasks, order_name="order", base_model=tiny_t5, method="RKIF", output_path=out,
                   data_dir=bench_dir, batch_size=4, make_predictor=make_predictor)
    assert len(alive) == 3  # one model per adapter, each gone before the next loaded


@pytest.mark.parametrize("backbone", ["t5", "llama"])
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_bf16_training_path_on_cpu(method, backbone, tiny_t5, tiny_llama, bench_dir, tmp_path, monkeypatch):
    """bf16 is refused without a GPU for users; HF 4.28.1 trains bf16 on CPU (CPU autocast), so the
    tests reach the bf16 path of every method on both backbones over two tasks (MTL: once). The LoRA-wrapped
    layers' matmuls (base and LoRA) must run in bf16 while training (recorded by a hook): a silent fall-back
    to fp32 fails."""
    import rkif.training
    from rkif.commands import entry_points

    finetune_llama_main, finetune_t5_main = entry_points.train_llama, entry_points.train_t5

    from conftest import cli_args

    monkeypatch.setattr(rkif.training, "training_precision", lambda precision, backbone="llama": (False, True))
    out = str(tmp_path / "out")
    model = tiny_t5 if backbone == "t5" else tiny_llama
    main = finetune_t5_main if backbone == "t5" else finetune_llama_main
    extra = {} if backbone == "t5" else {"cutoff_len": 128}
    dtypes = set()

    def record(module, args, output):
        # the matmuls themselves (a LoRA wrapper casts its sum back to its input's dtype; its parts do not)
        if module.training and type(module) is torch.nn.Linear and torch.is_tensor(output):
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        for t in ((2,) if method == "MTL" else (0, 1)):
            main(cli_args(model, bench_dir, out, t, method=method, val_set_size=0, num_epochs=1, precision="bf16",
                          **extra))
    finally:
        handle.remove()
    assert dtypes == {torch.bfloat16}, dtypes
    task = "2-food" if method == "MTL" else "1-sport"
    info = json.load(open(os.path.join(out, f"{os.path.basename(model)}lora_{method}_dataset_id_order", task,
                                       "run_info.json")))
    assert info["precision"] == {"fp16": False, "bf16": True} and info["train_metrics"]["train_loss"] > 0
    if method == "RKIF":
        assert info["kif"]["fusions"] > 0 and info["kif"]["inner_nonfinite_skips"] == 0


def outer_step_trainer(tiny_t5, bench_dir, tmp_path, model, max_grad_norm, scaler):
    """A RecurrentKIFTrainer over 8 examples of the fixture's first task, the separate outer optimizer and an
    outer batch of 2, ready for outer_step; scaler (a CPU GradScaler) installed when given."""
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, TrainingArguments

    from rkif.compat import install_grad_scaler
    from rkif.loop import FeatureList
    from rkif.seq2seq import tokenize_seq2seq
    from rkif.settings import KIFConfig
    from rkif.kif_trainer import RecurrentKIFTrainer

    tok = AutoTokenizer.from_pretrained(tiny_t5)
    features = tokenize_seq2seq(json.load(open(os.path.join(bench_dir, "train", "weather_T5.json")))[:8], tok, 64, 8)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=4, report_to="none",
                             max_grad_norm=max_grad_norm)
    trainer = RecurrentKIFTrainer(model=model, args=args, train_dataset=FeatureList(features),
                                  data_collator=DataCollatorForSeq2Seq(tok, return_tensors="pt", padding=True),
                                  kif_config=KIFConfig(outer_optimizer="separate", train_batch_size_outer=2),
                                  memory_dataset=features)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    trainer.state.max_steps = 4
    if scaler is not None:
        install_grad_scaler(trainer, scaler)
    trainer._kif_begin()
    return trainer


def test_gradient_scaler_skip_leaves_outer_tracker_and_schedule(tiny_t5, bench_dir, tmp_path):
    """fp16 scaler logic on CPU (torch.amp.GradScaler("cpu")): an inf gradient in an outer step is
    skipped by the scaler, enters no importance and does not advance the separate outer schedule."""
    from rkif.compat import grad_scaler

    model = new_lora_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), r=4, alpha=8, dropout=0.0,
                           target_modules=["q", "v"], task_type=TaskType.SEQ_2_SEQ_LM)
    trainer = outer_step_trainer(tiny_t5, bench_dir, tmp_path, model, 0.0, torch.amp.GradScaler("cpu", init_scale=2.0 ** 8))
    params = lora_parameters(model)
    first = next(iter(params.values()))
    before = {n: p.detach().clone() for n, p in params.items()}
    handle = first.register_hook(lambda g: torch.full_like(g, float("inf")))
    trainer.outer_step(trainer.draw_memory_batch()[1])
    handle.remove()
    assert trainer.outer_tracker.nonfinite_skips == 1 and trainer.outer_tracker.num_updates == 0
    assert trainer.outer_scheduler.last_epoch == 0 and grad_scaler(trainer).get_scale() == 2.0 ** 7
    assert all(torch.equal(p, before[n]) for n, p in params.items())  # the scaler skipped the step
    trainer.outer_step(trainer.draw_memory_batch()[1])
    assert trainer.outer_tracker.num_updates == 1 and trainer.outer_scheduler.last_epoch == 1
    assert all(torch.isfinite(s).all() for s in trainer.outer_tracker.scores().values())


def test_gradient_scaler_unscales_before_clipping_in_an_outer_step(tiny_t5, bench_dir, tmp_path):
    """Every real run clips (max_grad_norm 1.0 by default): under fp16 the gradients must be unscaled before
    the clip, or the clip acts on gradients 2^k too large and the step and the outer importance come out
    2^k too small. With the scaler (CPU), one finite outer step gives the clipped gradients, importance and
    weights of the same step without a scaler."""

    def one_outer_step(scaler):
        torch.manual_seed(0)
        model = new_lora_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), r=4, alpha=8, dropout=0.0,
                               target_modules=["q", "v"], task_type=TaskType.SEQ_2_SEQ_LM)
        with torch.no_grad():  # B = 0 at the start would leave A without gradients
            for n, p in lora_parameters(model).items():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))) * 0.1)
        trainer = outer_step_trainer(tiny_t5, bench_dir, tmp_path, model, 0.01, scaler)  # 0.01: small enough to clip
        trainer.outer_step(trainer.draw_memory_batch()[1])
        return trainer.outer_tracker.sensitivity, {n: p.detach().clone() for n, p in lora_parameters(model).items()}

    importance, weights = one_outer_step(None)
    scaled_importance, scaled_weights = one_outer_step(torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    for n in importance:
        torch.testing.assert_close(scaled_importance[n], importance[n], rtol=1e-4, atol=1e-12)
        torch.testing.assert_close(scaled_weights[n], weights[n], rtol=1e-5, atol=1e-8)
