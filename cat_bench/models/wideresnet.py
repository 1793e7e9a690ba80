"""WideResNet for CIFAR (docs/method.md section 2), laid out as in the TRADES / MART code.

Zagoruyko & Komodakis 2016, "Wide Residual Networks": a 3x3 stem with 16 channels, three groups
of pre-activation blocks with 16k/32k/64k channels (k = widen factor) and strides 1/2/2, final
BN+ReLU, global average pooling (8x8 for 32x32 input) and a linear layer. WRN-34-10 has about
46.16M parameters for 10 classes. Dropout is not used (dropRate 0 in TRADES / MART).
"""

import torch
import torch.nn.functional as F
from torch import nn


class WideBasicBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

    As in the TRADES code: when the channel count changes, the pre-activated input feeds both
    the residual branch and a 1x1 conv shortcut; otherwise the shortcut is the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        """Build a block mapping ``in_planes`` to ``out_planes`` channels with the given stride."""
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        if in_planes == out_planes:
            self.conv_shortcut = None
        else:
            self.conv_shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(pre)
        return out + shortcut


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen_factor`` (docs/method.md section 2; TRADES / MART layout).

    ``depth`` must satisfy (depth - 4) % 6 == 0; each of the three groups has (depth - 4) / 6
    blocks. Weights are initialized as in the TRADES code (He-normal convs with fan-out, BN
    weight 1 and bias 0, linear bias 0). Expects normalized input (the registry puts a
    Normalize in front).
    """

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3):
        """Build the network; raises ValueError if ``depth`` is not 6n+4 with n >= 1."""
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for in_planes, out_planes, stride in zip(widths[:-1], widths[1:], (1, 2, 2)):
            blocks = [WideBasicBlock(in_planes, out_planes, stride)]
            blocks += [WideBasicBlock(out_planes, out_planes, 1) for _ in range(n - 1)]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[-1])
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes)."""
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
