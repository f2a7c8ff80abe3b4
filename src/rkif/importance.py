"""Parameter importance: first-order sensitivity smoothed by an EMA, times its uncertainty."""

import torch


class ImportanceTracker:
    """Tracks score = I_bar * U_bar for every LoRA tensor (names containing ``lora_``).

    Per update, with s = |theta * grad|:
        I_bar <- beta1 * I_bar + (1 - beta1) * s
        U_bar <- beta2 * U_bar + (1 - beta2) * |s - I_bar|   (the new I_bar)
    State starts at zero the first time a tensor is seen. An update in which any tracked
    gradient holds NaN is skipped as a whole and counted in ``nan_skips``.
    """

    def __init__(self, beta1=0.85, beta2=0.85):
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.reset()

    def reset(self):
        self.sensitivity = {}  # I_bar
        self.uncertainty = {}  # U_bar
        self.num_updates = 0
        self.nan_skips = 0

    @torch.no_grad()
    def update(self, named_parameters):
        pairs = [(n, p) for n, p in named_parameters if "lora_" in n and p.grad is not None]
        # Checked before touching any state so a bad step leaves every tensor's EMA untouched.
        if any(torch.isnan(p.grad).any() for _, p in pairs):
            self.nan_skips += 1
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
                "nan_skips": self.nan_skips}

    def load_state_dict(self, state):
        self.sensitivity = dict(state["sensitivity"])
        self.uncertainty = dict(state["uncertainty"])
        self.num_updates = state["num_updates"]
        self.nan_skips = state["nan_skips"]

    def scores(self):
        return {n: self.sensitivity[n] * self.uncertainty[n] for n in self.sensitivity}
