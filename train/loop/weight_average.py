"""An exponential moving average of the model's weights, for what is validated and saved.

Training on a few minutes of takes is noisy: the weights after any one step carry that step's
batch. The average over recent steps scores better on held-out takes (bench_quality.py) at no
cost to training, which continues on the trained weights; both are kept in last.pt, so a
resumed run continues both exactly.
"""

from __future__ import annotations

import copy

import torch

# Early steps move the average further (decay (1 + n) / (WARMUP + n) until that exceeds the
# configured decay), so that it does not hold the initial weights for ~1 / (1 - decay) steps.
WARMUP = 10


class WeightAverage:
    """average: a copy of `model` (same class and shapes) holding the moving average of its
    parameters, with its buffers copied from `model` at every update."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model, self.decay, self.updates = model, decay, 0
        self.average = copy.deepcopy(model)
        self.average.requires_grad_(False)

    def update(self) -> None:
        """After an optimiser step."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (WARMUP + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.average.parameters()), list(self.model.parameters()), 1.0 - d)
            for mine, theirs in zip(self.average.buffers(), self.model.buffers(), strict=True):
                mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load(self, average_state: dict[str, torch.Tensor], state: dict) -> None:
        """Resume: the saved average's weights and update count."""
        self.average.load_state_dict(average_state)
        self.updates = int(state["updates"])
