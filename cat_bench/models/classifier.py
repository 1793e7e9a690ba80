"""The classifier wrapper every architecture is built into: normalisation inside the model."""

import torch
from torch import nn


class Classifier(nn.Module):
    """A classifier that takes [0,1] pixels: ``net(normalize(x))`` (docs/method.md section 2).

    ``normalize`` is a Normalize or an Identity. The attribute names keep state_dict keys free
    of "model." and "module.", which RobustBench strips when loading checkpoints.
    """

    def __init__(self, net: nn.Module, normalize: nn.Module | None = None):
        """Wrap ``net``, with ``normalize`` in front (Identity when None)."""
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits for a batch of [0,1] images."""
        return self.net(self.normalize(x))
