"""Parameter importance: first-order sensitivity smoothed by an EMA, times its uncertainty."""

import torch

from .settings import KIFConfig


def all_finite(tensors):
    """0-dim bool tensor: every entry of every tensor is finite. Computed on the first tensor's device
    without a host sync: one max-abs per tensor (a foreach kernel; NaN and inf survive a max), gathered
    there."""
    device = tensors[0].device
    peaks = torch._foreach_norm(list(tensors), float("inf"))
    return torch.isfinite(torch.stack([p.to(device) for p in peaks])).all()


class ImportanceTracker:
    """Tracks score = I_bar * U_bar for every LoRA tensor (names containing ``lora_``).

    Per update, with s = |theta * grad| (second_order: |theta * grad - (theta * grad)^2 / 2|, TaSL's score with
    its second-order term):
        I_bar <- beta1 * I_bar + (1 - beta1) * s
        U_bar <- beta2 * U_bar + (1 - beta2) * |s - I_bar|   (the new I_bar)
    State starts at zero the first time a tensor is seen. An update in which any tracked
    gradient holds NaN or inf is skipped as a whole and counted in ``nonfinite_skips``: one inf
    would stay in the EMAs for good, make the global threshold NaN and the mask all zeros.
    The update runs after every optimizer step, so it never waits for the GPU: the finiteness
    check and the counters stay on the device (the counters are read when a summary is written).
    """

    def __init__(self, beta1=KIFConfig.beta1, beta2=KIFConfig.beta2, second_order=False):
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.second_order = second_order
        self.reset()

    def reset(self):
        self.sensitivity = {}  # I_bar
        self.uncertainty = {}  # U_bar
        self._updates = 0  # ints, or 0-dim tensors on the gradients' device once updates ran
        self._skips = 0

    @property
    def num_updates(self):
        return int(self._updates)

    @property
    def nonfinite_skips(self):
        return int(self._skips)

    @torch.no_grad()
    def update(self, named_parameters):
        """Fold one step's gradients in; returns a 0-dim bool tensor, True where the step was applied."""
        pairs = [(n, p) for n, p in named_parameters if "lora_" in n and p.grad is not None]
        if not pairs:
            self._updates += 1
            return torch.tensor(True)
        ok = all_finite([p.grad for _, p in pairs])
        for name, p in pairs:
            if name not in self.sensitivity:
                self.sensitivity[name] = torch.zeros_like(p, dtype=torch.float32)
                self.uncertainty[name] = torch.zeros_like(p, dtype=torch.float32)
        # The same arithmetic as one tensor at a time (bitwise on CPU), in a few foreach kernels for all
        # tensors: T5-large has ~400 LoRA tensors, and one kernel per tensor per operation cost ~4,000
        # launches per step.
        i_bars = [self.sensitivity[n] for n, _ in pairs]
        u_bars = [self.uncertainty[n] for n, _ in pairs]
        s = torch._foreach_mul([p.detach() for _, p in pairs], [p.grad for _, p in pairs])
        if self.second_order:
            torch._foreach_add_(s, torch._foreach_mul(s, s), alpha=-0.5)
        torch._foreach_abs_(s)
        s = [t.float() for t in s]  # a no-op for fp32 adapters
        new_i = torch._foreach_mul(i_bars, self.beta1)
        torch._foreach_add_(new_i, s, alpha=1 - self.beta1)
        spread = torch._foreach_sub(s, new_i)
        torch._foreach_abs_(spread)
        new_u = torch._foreach_mul(u_bars, self.beta2)
        torch._foreach_add_(new_u, spread, alpha=1 - self.beta2)
        # a non-finite step leaves every EMA as it was, decided on the device (no foreach select exists,
        # and NaN survives any arithmetic blend: one where per tensor)
        for (name, _), i_bar, u_bar, n_i, n_u in zip(pairs, i_bars, u_bars, new_i, new_u):
            keep = ok.to(n_i.device)
            self.sensitivity[name] = torch.where(keep, n_i, i_bar)
            self.uncertainty[name] = torch.where(keep, n_u, u_bar)
        self._updates = self._updates + ok.long()
        self._skips = self._skips + ok.logical_not().long()
        return ok

    def state_dict(self):
        return {"sensitivity": self.sensitivity, "uncertainty": self.uncertainty, "num_updates": self.num_updates,
                "nonfinite_skips": self.nonfinite_skips}

    def load_state_dict(self, state):
        self.sensitivity = dict(state["sensitivity"])
        self.uncertainty = dict(state["uncertainty"])
        self._updates = state["num_updates"]
        self._skips = state.get("nonfinite_skips", state.get("nan_skips", 0))  # older checkpoints

    def scores(self):
        return {n: self.sensitivity[n] * self.uncertainty[n] for n in self.sensitivity}
