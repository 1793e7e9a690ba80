"""The MNIST classifier of docs/method.md section 2 (the adversarial-ml tutorial's small CNN)."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four 3x3 convs (32, 32, 64, 64 channels; stride 2 on the 2nd and 4th) and two linears.

    docs/method.md section 2: conv 1->32, ReLU; conv 32->32 stride 2, ReLU; conv 32->64, ReLU;
    conv 64->64 stride 2, ReLU; flatten (7*7*64 for 28x28 input); linear ->100, ReLU;
    linear 100->classes. Every conv has padding 1. No input normalization.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        """Build the layers for ``in_channels`` x 28 x 28 input and ``num_classes`` outputs."""
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 100),
            nn.ReLU(),
            nn.Linear(100, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes) for input of shape (N, C, 28, 28)."""
        return self.classifier(self.features(x))
