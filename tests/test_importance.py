import math

import pytest
import torch

from rkif.importance import ImportanceTracker


def param(values, grad):
    p = torch.nn.Parameter(torch.tensor(values))
    p.grad = torch.tensor(grad)
    return p


def test_two_updates_match_hand_computed_ema():
    t = ImportanceTracker(beta1=0.5, beta2=0.75)
    p = param([2.0, -1.0], [0.5, 3.0])  # s = |theta * grad| = [1, 3]
    t.update([("layer.lora_A.weight", p)])
    # I = 0.5*0 + 0.5*s = [0.5, 1.5]; U = 0.75*0 + 0.25*|s - I| = [0.125, 0.375]
    assert torch.allclose(t.sensitivity["layer.lora_A.weight"], torch.tensor([0.5, 1.5]))
    assert torch.allclose(t.uncertainty["layer.lora_A.weight"], torch.tensor([0.125, 0.375]))
    p.grad = torch.tensor([1.0, 0.0])  # s = [2, 0]
    t.update([("layer.lora_A.weight", p)])
    i_bar = [0.5 * 0.5 + 0.5 * 2, 0.5 * 1.5 + 0.0]  # [1.25, 0.75]
    u_bar = [0.75 * 0.125 + 0.25 * abs(2 - 1.25), 0.75 * 0.375 + 0.25 * abs(0 - 0.75)]
    assert torch.allclose(t.sensitivity["layer.lora_A.weight"], torch.tensor(i_bar))
    assert torch.allclose(t.uncertainty["layer.lora_A.weight"], torch.tensor(u_bar))
    expected = [i * u for i, u in zip(i_bar, u_bar)]
    assert torch.allclose(t.scores()["layer.lora_A.weight"], torch.tensor(expected))
    assert t.num_updates == 2 and math.isclose(expected[0], 1.25 * (0.09375 + 0.1875))


def test_tracks_only_lora_tensors_with_gradients():
    t = ImportanceTracker()
    no_grad = torch.nn.Parameter(torch.ones(2))
    t.update([("encoder.q.weight", param([1.0], [1.0])), ("q.lora_B.default.weight", param([1.0], [1.0])),
              ("q.lora_A.default.weight", no_grad)])
    assert set(t.scores()) == {"q.lora_B.default.weight"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_gradient_skips_whole_update_and_is_counted(bad):
    t = ImportanceTracker(0.85, 0.85)
    a, b = param([1.0, 1.0], [1.0, 1.0]), param([1.0], [2.0])
    t.update([("a.lora_A", a), ("b.lora_B", b)])
    before = {n: v.clone() for n, v in t.scores().items()}
    b.grad = torch.tensor([bad])
    assert not t.update([("a.lora_A", a), ("b.lora_B", b)])
    assert t.nonfinite_skips == 1 and t.num_updates == 1
    for n, v in t.scores().items():
        assert torch.equal(v, before[n])
    assert all(torch.isfinite(v).all() for v in t.scores().values())


def test_reset_clears_state_and_counters():
    t = ImportanceTracker()
    p = param([1.0], [float("nan")])
    t.update([("x.lora_A", p)])
    p.grad = torch.tensor([1.0])
    t.update([("x.lora_A", p)])
    t.reset()
    assert t.scores() == {} and t.num_updates == 0 and t.nonfinite_skips == 0


def one_tensor_at_a_time(state, pairs, beta1, beta2):
    """The importance update tensor by tensor, as this package computed it before the foreach kernels
    (the reference: the EMA adds (1 - beta) * s as an add with alpha)."""
    for name, p in pairs:
        s = (p.detach() * p.grad).abs().float()
        i_bar, u_bar = state.setdefault(name, (torch.zeros_like(s), torch.zeros_like(s)))
        new_i = i_bar.mul(beta1).add_(s, alpha=1 - beta1)
        state[name] = (new_i, u_bar.mul(beta2).add_((s - new_i).abs(), alpha=1 - beta2))


def lora_pairs(generator, count):
    pairs = []
    for k in range(count):
        shape = (8, 3 + k % 5) if k % 2 else (2 + k % 3, 8)
        p = torch.nn.Parameter(torch.randn(shape, generator=generator))
        p.grad = torch.randn(shape, generator=generator) * 10 ** float(k % 7 - 3)
        pairs.append((f"layer{k}.lora_{'AB'[k % 2]}.weight", p))
    return pairs


def test_batched_update_is_bitwise_the_tensor_by_tensor_one():
    generator = torch.Generator().manual_seed(0)
    tracker, reference = ImportanceTracker(0.85, 0.85), {}
    for _ in range(4):
        pairs = lora_pairs(generator, 13)
        tracker.update(pairs)
        one_tensor_at_a_time(reference, pairs, 0.85, 0.85)
    for name, (i_bar, u_bar) in reference.items():
        assert torch.equal(tracker.sensitivity[name], i_bar) and torch.equal(tracker.uncertainty[name], u_bar)


def test_update_launches_a_few_kernels_for_all_tensors_not_a_dozen_per_tensor():
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    def ops_per_update(count):
        generator = torch.Generator().manual_seed(count)
        tracker, pairs = ImportanceTracker(), lora_pairs(generator, count)
        tracker.update(pairs)  # first sight allocates the EMAs
        with CountOps() as counter:
            tracker.update(pairs)
        return counter.ops

    per_tensor = (ops_per_update(60) - ops_per_update(20)) / 40
    # the select of a skipped step (torch.where on each EMA) is all that remains per tensor; the
    # tensor-by-tensor update took 12 (mul, abs, mul, add, sub, abs, mul, add, where x2, isfinite, all)
    assert per_tensor <= 3, per_tensor
