"""Parameter importance: first-order sensitivity smoothed by an EMA, times its uncertainty."""

import torch


def all_finite(tensors):
    """Whether every entry of every tensor is finite, with one host sync for all of them (the
    per-tensor answers are gathered on the first tensor's device)."""
    device = tensors[0].device
    return bool(torch.stack([torch.isfinite(t).all().to(device) for t in tensors]).all())


class ImportanceTracker:
    """Tracks score = I_bar * U_bar for every LoRA tensor (names containing ``lora_``).

    Per update, with s = |theta * grad|:
        I_bar <- beta1 * I_bar + (1 - beta1) * s
        U_bar <- beta2 * U_bar + (1 - beta2) * |s - I_bar|   (the new I_bar)
    State starts at zero the first time a tensor is seen. An update in which any tracked
    gradient holds NaN or inf is skipped as a whole and counted in ``nonfinite_skips``: one inf
    would stay in the EMAs for good, make the global threshold NaN and the mask all zeros.
    """

    def __init__(self, beta1=0.85, beta2=0.85):
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.reset()

    def reset(self):
        self.sensitivity = {}  # I_bar
        self.uncertainty = {}  # U_bar
        self.num_updates = 0
        self.nonfinite_skips = 0

    @torch.no_grad()
    def update(self, named_parameters):
        pairs = [(n, p) for n, p in named_parameters if "lora_" in n and p.grad is not None]
        # Checked before touching any state so a bad step leaves every tensor's EMA untouched; one
        # fused check, so one host sync per update rather than one per tensor.
        if pairs and not all_finite([p.grad for _, p in pairs]):
            self.nonfinite_skips += 1
            return False
        for name, p in pairs:
            s = (p.detach() * p.grad).abs().float()
            if name not in self.sensitivity:
                self.sensitivity[name] = torch.zeros_like(s)
                self.uncertainty[name] = torch.zeros_like(s)
            i_bar = self.sensitivity[name]
            i_bar.mul_(self.beta1).add_(s, alpha=1 - self.beta1)
            self.uncertainty[name].mul_(self.beta2).add_((s - i_bar).abs(), alpha=1 - self.beta2)
        self.num_updates += 1
        return True

    def state_dict(self):
        return {"sensitivity": self.sensitivity, "uncertainty": self.uncertainty, "num_updates": self.num_updates,
                "nonfinite_skips": self.nonfinite_skips}

    def load_state_dict(self, state):
        self.sensitivity = dict(state["sensitivity"])
        self.uncertainty = dict(state["uncertainty"])
        self.num_updates = state["num_updates"]
        self.nonfinite_skips = state.get("nonfinite_skips", state.get("nan_skips", 0))  # older checkpoints

    def scores(self):
        return {n: self.sensitivity[n] * self.uncertainty[n] for n in self.sensitivity}
