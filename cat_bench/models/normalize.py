"""Per-channel input normalization kept inside the model (docs/method.md section 2).

The CIFAR classifiers normalize internally so that attacks, masks and calibration all work in
[0,1] pixel space.
"""

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Map [0,1] pixels to ``(x - mean) / std`` per channel (docs/method.md section 2).

    ``mean`` and ``std`` are stored as buffers of shape (1, C, 1, 1) so they follow the model's
    device and dtype and are saved in its state_dict.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        """Store ``mean`` and ``std`` (one value per channel, equal lengths, std > 0)."""
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a batch of shape (N, C, H, W) with pixels in [0,1]."""
        return (x - self.mean) / self.std
