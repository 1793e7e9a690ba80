"""The MNIST classifiers of the baselines' official scripts (Table 1's AT and TRADES rows)."""

import torch
from torch import nn


class MadryCNN(nn.Module):
    """MadryLab/mnist_challenge model.py: conv 5x5 32 (SAME), 2x2 max-pool, conv 5x5 64 (SAME),
    2x2 max-pool, linear 7*7*64 -> 1024, linear -> classes; ReLUs; weights from a normal of std 0.1
    truncated at 2 std, biases 0.1 (its _weight_variable / _bias_variable)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(),
                                        nn.Linear(1024, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
                nn.init.constant_(m.bias, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for (N, C, 28, 28) input."""
        return self.classifier(self.features(x))


class TradesSmallCNN(nn.Module):
    """yaodongyu/TRADES models/small_cnn.py: convs 3x3 32, 32, pool, 64, 64, pool (no padding),
    linear 64*4*4 -> 200, dropout 0.5, 200 -> 200, 200 -> classes; ReLUs; Kaiming-normal conv
    weights, zero conv biases, and a zero last layer (its __init__)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, drop: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 200), nn.ReLU(), nn.Dropout(drop),
            nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, num_classes),
        )
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.classifier[-1].weight, 0)
        nn.init.constant_(self.classifier[-1].bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for (N, C, 28, 28) input."""
        return self.classifier(self.features(x))
