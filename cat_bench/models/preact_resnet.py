"""PreAct ResNet-18 for CIFAR (docs/method.md section 2), the network of Rice et al. 2020.

Pre-activation residual blocks (He et al. 2016, "Identity Mappings in Deep Residual Networks"),
with the CIFAR layout used by Rice et al.: 3x3 stem, four stages of two blocks, final BN+ReLU,
global average pooling (4x4 for 32x32 input) and a linear layer.
"""

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

    When the shape changes, the shortcut is a strided 1x1 conv applied to the pre-activated
    input, as in Rice et al.'s PreActResNet18 (docs/method.md section 2).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        """Build a block mapping ``in_planes`` to ``planes`` channels with the given stride."""
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 (about 11.17M parameters for 10 classes), docs/method.md section 2.

    Stem conv3x3 -> 64; stages of [2, 2, 2, 2] PreActBlocks with 64/128/256/512 channels and
    strides 1/2/2/2; BN+ReLU; global average pooling; linear. Expects normalized input (the
    registry puts a Normalize in front).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        """Build the network for ``in_channels`` input channels and ``num_classes`` outputs."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        stages = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes)."""
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
