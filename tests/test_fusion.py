import math

import numpy as np
import pytest
import torch

from rkif.fusion import fuse, fusion_statistics, fusion_weights, global_mask, global_threshold, quantile_threshold


def test_four_fusion_cases_entry_by_entry():
    m_in = torch.tensor([1.0, 0.0, 1.0, 0.0])
    m_out = torch.tensor([0.0, 1.0, 1.0, 0.0])
    anchor = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    d_in = {"w": torch.tensor([10.0, 10.0, 10.0, 10.0])}
    d_out = {"w": torch.tensor([100.0, 100.0, 100.0, 100.0])}
    fused = fuse(anchor, d_in, d_out, {"w": m_in}, {"w": m_out})["w"]
    # inner only: 1 + 10; outer only: 1 + 100; both: 1 + 0.4*10 + 0.6*100; neither: 1 + 0.5*10 + 0.5*100
    assert torch.allclose(fused, torch.tensor([11.0, 101.0, 65.0, 56.0]))
    w_in, w_out = fusion_weights(m_in, m_out)
    assert torch.allclose(w_in, torch.tensor([1.0, 0.0, 0.4, 0.5]))
    assert torch.allclose(w_out, torch.tensor([0.0, 1.0, 0.6, 0.5]))


def test_tensor_missing_from_a_mask_counts_as_unimportant():
    anchor = {"w": torch.zeros(2)}
    fused = fuse(anchor, {"w": torch.tensor([2.0, 2.0])}, {"w": torch.tensor([4.0, 4.0])},
                 {"w": torch.tensor([1.0, 0.0])}, {})
    assert torch.allclose(fused["w"], torch.tensor([2.0, 3.0]))


def test_one_threshold_across_all_tensors():
    # 10 scores in all: 1..10 split over two tensors; the 0.8-quantile (linear) is 1 + 0.8*9 = 8.2
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), "b": torch.tensor([[6.0, 7.0], [8.0, 9.0]]),
              "c": torch.tensor([10.0])}
    masks = global_mask(scores, 0.8)
    assert torch.equal(masks["a"], torch.zeros(5))  # a per-tensor threshold would mark 5
    assert torch.equal(masks["b"], torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(masks["c"], torch.ones(1))
    assert masks["b"].shape == (2, 2)


def test_mask_is_strictly_greater_than_threshold():
    scores = {"a": torch.tensor([1.0, 1.0, 1.0, 1.0]), "b": torch.tensor([2.0])}
    # quantile 0.5 of [1, 1, 1, 1, 2] is exactly 1: entries equal to tau stay 0
    masks = global_mask(scores, 0.5)
    assert masks["a"].sum() == 0 and masks["b"].item() == 1.0
    assert global_mask(scores, 1.0)["b"].item() == 0.0  # nothing is above the maximum


@pytest.mark.parametrize("q", [0.0, 0.13, 0.5, 0.8, 0.999, 1.0])
def test_quantile_matches_torch_linear_interpolation(q):
    x = torch.rand(1001, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(quantile_threshold(x, q), torch.quantile(x, q))


def test_quantile_beyond_torch_limit_of_2_pow_24_elements():
    x = torch.rand(2**24 + 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError):
        torch.quantile(x, 0.8)
    expected = np.quantile(x.double().numpy(), 0.8)
    assert abs(quantile_threshold(x, 0.8).item() - expected) < 1e-6


def test_quantile_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        quantile_threshold(torch.tensor([]), 0.5)
    with pytest.raises(ValueError, match="quantile"):
        quantile_threshold(torch.ones(3), 1.5)


def test_fusion_statistics_against_a_hand_made_fusion():
    # two tensors, 10 entries: inner-only 3, outer-only 2, both 1, neither 4
    inner = {"a": torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]), "b": torch.tensor([0.0, 0.0, 0.0, 0.0])}
    outer = {"a": torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0]), "b": torch.tensor([1.0, 0.0, 0.0, 0.0])}
    d_in = {"a": torch.full((6,), 3.0), "b": torch.full((4,), -1.0)}
    d_out = {"a": torch.full((6,), 0.5), "b": torch.full((4,), 2.0)}
    stats = fusion_statistics(d_in, d_out, inner, outer)
    assert stats["share_inner_only"] == 0.3 and stats["share_outer_only"] == 0.2
    assert stats["share_both"] == 0.1 and stats["share_neither"] == 0.4
    assert math.isclose(sum(v for k, v in stats.items() if k.startswith("share_")), 1.0)
    assert stats["delta_in_norm"] == pytest.approx(math.sqrt(6 * 9 + 4 * 1))
    assert stats["delta_out_norm"] == pytest.approx(math.sqrt(6 * 0.25 + 4 * 4))
    # the shares are those of the weights the fusion applied: w_in = 1 / 0 / 0.4 / 0.5 per case
    zeros = lambda d: {k: torch.zeros_like(v) for k, v in d.items()}  # noqa: E731
    fused = fuse(zeros(d_in), d_in, zeros(d_out), inner, outer)
    w_in = torch.cat([fused["a"] / 3.0, fused["b"] / -1.0])
    assert [(w_in == w).float().mean().item() for w in (1.0, 0.0, 0.4, 0.5)] == pytest.approx([0.3, 0.2, 0.1, 0.4])
    # threshold and mask agree
    scores = {"a": torch.arange(6.0), "b": torch.arange(6.0, 10.0)}
    tau = global_threshold(scores, 0.8)
    assert float(tau) == pytest.approx(7.2)
    assert global_mask(scores, 0.8, tau)["b"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert global_threshold({}, 0.8) is None
