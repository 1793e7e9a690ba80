"""Registry of the classifiers and CAT mask networks of docs/method.md section 2.

``build_classifier`` returns a model that takes [0,1] pixels (normalization, when given, is
inside the model) and ``build_mask_net`` returns the mask net g for a dataset family. The names
and their checks import no torch (`cat-bench list` and bad arguments answer at once); a network's
module is imported when it is built.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cat_bench.errors import UsageError

from cat_bench.lazy import torch

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ARCHITECTURES", "MASK_FAMILIES", "batchnorms", "build_classifier", "build_mask_net", "check_arch"]

ARCHITECTURES: dict[str, str] = {
    "smallcnn": "MNIST small CNN: 4 convs (32,32,64,64) + 2 linears, no normalization (docs/method.md s.2)",
    "madry-cnn": "MNIST CNN of Madry et al. (mnist_challenge model.py): 2 convs 5x5 + pools, linear 1024",
    "trades-smallcnn": "MNIST SmallCNN of TRADES (models/small_cnn.py): 4 convs 3x3 + pools, 200-200, dropout 0.5",
    "preact-resnet18": "PreAct ResNet-18 for CIFAR, as in Rice et al. 2020 (docs/method.md s.2)",
    "wrn-34-10": "WideResNet-34-10 for CIFAR, as in TRADES / MART (docs/method.md s.2)",
}

MASK_FAMILIES: dict[str, str] = {
    "mnist": "3-conv LeakyReLU mask net, nearest resize, conv + sigmoid (docs/method.md s.2)",
    "cifar": "ResNet-18 trunk mask net, nearest resize, conv + sigmoid (docs/method.md s.2)",
}

_ALLOWED = "smallcnn, madry-cnn, trades-smallcnn, preact-resnet18, wrn-34-10 (or wrn-DEPTH-WIDTH)"
_WRN_PATTERN = re.compile(r"wrn-(\d+)-(\d+)")


# Input height and width a network's linear head is sized for; the others pool globally and take any size.
INPUT_SIZE: dict[str, tuple[int, int]] = {"smallcnn": (28, 28), "madry-cnn": (28, 28), "trades-smallcnn": (28, 28)}


def check_arch(arch: str, shape: Sequence[int] | None = None) -> None:
    """Raise UsageError unless ``arch`` names a classifier (a key of ARCHITECTURES or a valid
    "wrn-DEPTH-WIDTH") that takes inputs of ``shape`` (C, H, W), when given."""
    if arch in ARCHITECTURES:
        if shape is not None and arch in INPUT_SIZE and tuple(shape[1:]) != INPUT_SIZE[arch]:
            fits = [a for a in ARCHITECTURES if a not in INPUT_SIZE or INPUT_SIZE[a] == tuple(shape[1:])]
            raise UsageError(f"architecture {arch!r} takes {INPUT_SIZE[arch][0]}x{INPUT_SIZE[arch][1]} images, not "
                             f"{shape[1]}x{shape[2]}; allowed for this dataset: {', '.join(fits)} (or wrn-DEPTH-WIDTH)")
        return
    match = _WRN_PATTERN.fullmatch(arch)
    if match is None:
        raise UsageError(f"unknown architecture {arch!r}; allowed: {_ALLOWED}")
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 != 0:
        raise UsageError(
            f"WideResNet depth {depth} in {arch!r} is not allowed; depth must be 6n+4 with n >= 1 "
            f"(e.g. 10, 16, 22, 28, 34)"
        )
    if width < 1:
        raise UsageError(f"WideResNet widen factor {width} in {arch!r} is not allowed; it must be >= 1")


def _build_net(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    """Build the bare network for a checked ``arch``."""
    kwargs = {"num_classes": num_classes, "in_channels": in_channels}
    if arch == "smallcnn":
        from cat_bench.models.smallcnn import SmallCNN
        return SmallCNN(**kwargs)
    if arch == "madry-cnn":
        from cat_bench.models.mnist_baselines import MadryCNN
        return MadryCNN(**kwargs)
    if arch == "trades-smallcnn":
        from cat_bench.models.mnist_baselines import TradesSmallCNN
        return TradesSmallCNN(**kwargs)
    if arch == "preact-resnet18":
        from cat_bench.models.preact_resnet import PreActResNet18
        return PreActResNet18(**kwargs)
    from cat_bench.models.wideresnet import WideResNet
    depth, width = map(int, _WRN_PATTERN.fullmatch(arch).groups())
    return WideResNet(depth=depth, widen_factor=width, **kwargs)


def build_classifier(
    arch: str,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Build the classifier ``arch`` of docs/method.md section 2, taking [0,1] pixels.

    ``arch`` is a key of ARCHITECTURES or any "wrn-DEPTH-WIDTH". With ``mean`` (and ``std``)
    the model's first layer is Normalize(mean, std); otherwise it is an Identity.
    Raises UsageError for an unknown architecture, a bad WRN depth, or mismatched mean/std.
    """
    from cat_bench.models.classifier import Classifier
    from cat_bench.models.normalize import Normalize

    check_arch(arch)
    net = _build_net(arch, num_classes, in_channels)
    if mean is None:
        if std is not None:
            raise UsageError("std was given without mean; give both or neither")
        return Classifier(net)
    if std is None or len(mean) != in_channels or len(std) != in_channels:
        raise UsageError(
            f"mean {mean!r} and std {std!r} must both be given with {in_channels} values (one per channel)"
        )
    if any(s <= 0 for s in std):
        raise UsageError(f"std {std!r} is not allowed; every value must be positive")
    return Classifier(net, Normalize(mean, std))


def batchnorms(net: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``net`` (their running statistics depend on every train-mode forward)."""
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def build_mask_net(family: str, in_channels: int) -> nn.Module:
    """Build the CAT mask net g for ``family`` ("mnist" or "cifar"), docs/method.md section 2.

    The net takes unnormalized [0,1] images and returns a same-shaped mask in (0,1).
    Raises UsageError for an unknown family.
    """
    from cat_bench.models.masknet import CifarMaskNet, MnistMaskNet

    if family == "mnist":
        return MnistMaskNet(in_channels)
    if family == "cifar":
        return CifarMaskNet(in_channels)
    raise UsageError(f"unknown mask-net family {family!r}; allowed: {', '.join(MASK_FAMILIES)}")
