"""The CAT mask networks g (docs/method.md section 2), taken from the CAT code.

g maps an unnormalized [0,1] image to a per-pixel mask in (0,1) of the same shape. Both nets
compute features, resize them to the input's height and width (nearest neighbour), and apply a
3x3 conv followed by a sigmoid.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _resize_and_squash(features: torch.Tensor, head: nn.Conv2d, like: torch.Tensor) -> torch.Tensor:
    """Nearest-resize ``features`` to ``like``'s H x W, apply ``head`` and a sigmoid."""
    features = F.interpolate(features, size=like.shape[-2:], mode="nearest")
    return torch.sigmoid(head(features))


class MnistMaskNet(nn.Module):
    """MNIST mask net g (docs/method.md section 2; the CAT code, not the paper's Table 5 widths).

    conv C->64 3x3 stride 2, LeakyReLU(0.2); conv 64->128 3x3, LeakyReLU(0.2); conv 128->128
    3x3, LeakyReLU(0.2); nearest resize to the input size; conv 128->C 3x3; sigmoid. All convs
    have padding 1.
    """

    def __init__(self, in_channels: int = 1):
        """Build the layers for ``in_channels``-channel images."""
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.head = nn.Conv2d(128, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return a mask with the shape of ``x`` and values in (0,1)."""
        return _resize_and_squash(self.features(x), self.head, x)


class BasicBlock(nn.Module):
    """Standard (post-activation) ResNet basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU.

    He et al. 2016; the shortcut is a strided 1x1 conv + BN when the shape changes. Used by the
    CIFAR mask net trunk (docs/method.md section 2).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        """Build a block mapping ``in_planes`` to ``planes`` channels with the given stride."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarMaskNet(nn.Module):
    """CIFAR mask net g (docs/method.md section 2; the paper's Table 6 and the CAT code).

    A standard CIFAR ResNet-18 trunk: conv3x3 C->64 + BN + ReLU, then four stages of two
    BasicBlocks with 64/128/256/512 channels and strides 1/2/2/2 (no pooling, no FC); nearest
    resize to the input size; conv 512->C 3x3 (padding 1); sigmoid.
    """

    def __init__(self, in_channels: int = 3):
        """Build the trunk and head for ``in_channels``-channel images."""
        super().__init__()
        layers = [
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        ]
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Conv2d(512, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return a mask with the shape of ``x`` and values in (0,1)."""
        return _resize_and_squash(self.trunk(x), self.head, x)
