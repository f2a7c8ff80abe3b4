"""Global importance masks and the four-case fusion of inner and outer LoRA updates."""

import math

import torch

# (w_in, w_out) when both masks mark an entry important, and when neither does.
BOTH_IMPORTANT = (0.4, 0.6)
NEITHER_IMPORTANT = (0.5, 0.5)


def quantile_threshold(values, q):
    """torch.quantile(values, q) with linear interpolation, for any number of elements.

    torch.quantile refuses inputs above 2**24 elements (a LoRA adapter of a 13B model has
    more), so the two order statistics around the position are taken with kthvalue.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError("quantile of an empty set of scores")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    pos = q * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    v_lo = torch.kthvalue(flat, lo + 1).values
    v_hi = v_lo if hi == lo else torch.kthvalue(flat, hi + 1).values
    return v_lo + (pos - lo) * (v_hi - v_lo)


def global_threshold(scores, quantile):
    """tau: the q-quantile of all scores of all tensors together (None without scores), a 0-dim tensor
    on the device of the first score (kthvalue picks an element, so every device gives the same tau)."""
    if not scores:
        return None
    device = scores[min(scores)].device
    return quantile_threshold(torch.cat([scores[n].reshape(-1).float().to(device) for n in sorted(scores)]), quantile)


def global_mask(scores, quantile, tau=None):
    """{name: 0/1 tensor}: 1 where score > tau, tau the q-quantile of all scores together."""
    if not scores:
        return {}
    tau = global_threshold(scores, quantile) if tau is None else tau
    return {n: (scores[n] > tau.to(scores[n].device, scores[n].dtype)).to(scores[n].dtype) for n in sorted(scores)}


def fusion_statistics(delta_in, delta_out, inner_mask, outer_mask):
    """What one fusion did: the share of LoRA entries in each of the four mask cases (they sum to
    1) and the L2 norms of the inner and outer updates over all tensors, as 0-dim float64 tensors
    on the first tensor's device: they stay there until they are logged, so a fusion does not wait
    for the GPU (``float()`` reads one)."""
    device = delta_in[min(delta_in)].device
    zero = torch.zeros((), dtype=torch.float64, device=device)
    counts = {"inner_only": zero, "outer_only": zero, "both": zero, "neither": zero}
    total, norm_in, norm_out = 0, zero, zero
    for name, d in delta_in.items():
        m_in = inner_mask[name].bool() if name in inner_mask else torch.zeros_like(d, dtype=torch.bool)
        m_out = outer_mask[name].bool() if name in outer_mask else torch.zeros_like(d, dtype=torch.bool)
        not_in, not_out = m_in.logical_not(), m_out.logical_not()
        for case, m in (("inner_only", m_in & not_out), ("outer_only", not_in & m_out), ("both", m_in & m_out),
                        ("neither", not_in & not_out)):
            counts[case] = counts[case] + m.sum().to(device, torch.float64)
        total += d.numel()
        norm_in = norm_in + d.float().pow(2).sum().to(device, torch.float64)
        norm_out = norm_out + delta_out[name].float().pow(2).sum().to(device, torch.float64)
    stats = {f"share_{case}": n / total for case, n in counts.items()}
    return {**stats, "delta_in_norm": norm_in.sqrt(), "delta_out_norm": norm_out.sqrt()}


def fusion_weights(inner_mask, outer_mask):
    """Per-entry (w_in, w_out): inner only -> (1, 0), outer only -> (0, 1), both -> (0.4, 0.6),
    neither -> (0.5, 0.5). Chosen with torch.where (no boolean indexing, which needs a host sync)."""
    m_in = inner_mask.bool()
    m_out = outer_mask.bool()
    w_in = torch.where(m_in, torch.where(m_out, BOTH_IMPORTANT[0], 1.0), torch.where(m_out, 0.0, NEITHER_IMPORTANT[0]))
    # Every case's weights sum to one, so w_out follows from w_in.
    return w_in.to(torch.float32), 1.0 - w_in.to(torch.float32)


def fuse(anchor, delta_in, delta_out, inner_mask, outer_mask):
    """theta = anchor + w_in * delta_in + w_out * delta_out, per entry, for every tensor of ``anchor``.

    A tensor missing from a mask (its tracker never saw a valid gradient) counts as all zeros.
    """
    fused = {}
    for name, a in anchor.items():
        m_in = inner_mask.get(name)
        m_out = outer_mask.get(name)
        m_in = torch.zeros_like(a, dtype=torch.bool) if m_in is None else m_in
        m_out = torch.zeros_like(a, dtype=torch.bool) if m_out is None else m_out
        w_in, w_out = fusion_weights(m_in, m_out)
        # anchor + (weighted deltas), summed in the released order, so results agree to the bit
        fused[name] = (a.float() + (w_in * delta_in[name].float() + w_out * delta_out[name].float())).to(a.dtype)
    return fused
