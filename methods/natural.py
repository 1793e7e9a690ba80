"""Natural (standard) training: the reference point with no robustness."""

from __future__ import annotations

from cat_bench.lazy import F
from cat_bench.methods.base import Method


class Natural(Method):
    """Cross-entropy on clean examples only."""

    name = "natural"
    label = "Natural"
    color = "#7f7f7f"

    @classmethod
    def passes(cls, k, hparams):
        """One forward and backward of f on the clean batch."""
        return {"f": 1}

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            loss = F.cross_entropy(self.f(x).float(), y)
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
