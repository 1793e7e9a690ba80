"""Tests for the classifiers and mask nets of docs/method.md section 2 (cat_bench.models)."""

import pytest
import torch

from cat_bench.errors import UsageError
from cat_bench.models import ARCHITECTURES, build_classifier, build_mask_net
from cat_bench.models.classifier import Classifier
from cat_bench.models.normalize import Normalize

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


def n_params(model: torch.nn.Module) -> int:
    """Count the trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def test_mnist_baseline_models_match_their_scripts():
    """madry-cnn: mnist_challenge model.py's layer sizes (3,274,634 weights), truncated-normal init
    within 2 std of 0.1 and biases 0.1; trades-smallcnn: TRADES small_cnn.py (312,202 weights) with
    a zero last layer and dropout 0.5."""
    madry = build_classifier("madry-cnn", 10, 1)
    assert n_params(madry) == (5 * 5 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (7 * 7 * 64 * 1024 + 1024) + (1024 * 10 + 10)
    weights = [m.weight for m in madry.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(w.abs().max() <= 0.2 for w in weights) and 0.08 < weights[2].std() < 0.1
    assert all(torch.equal(m.bias, torch.full_like(m.bias, 0.1)) for m in madry.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    trades = build_classifier("trades-smallcnn", 10, 1)
    assert n_params(trades) == (9 * 32 + 32) + (9 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64) + (
        64 * 16 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)
    last = trades.net.classifier[-1]
    assert not last.weight.any() and not last.bias.any()
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in trades.modules())


def test_registry_names():
    """The paper's architectures and the baselines' official MNIST models are registered."""
    assert set(ARCHITECTURES) == {"smallcnn", "madry-cnn", "trades-smallcnn", "preact-resnet18", "wrn-34-10"}


@pytest.mark.parametrize(
    ("arch", "channels", "size"),
    [("smallcnn", 1, 28), ("madry-cnn", 1, 28), ("trades-smallcnn", 1, 28), ("preact-resnet18", 3, 32),
     ("wrn-16-2", 3, 32), ("wrn-10-1", 3, 32)],
)
def test_classifier_output_shape(arch, channels, size):
    """Each classifier maps (N, C, H, W) to (N, num_classes) logits."""
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=10, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_classifier_num_classes():
    """num_classes sets the width of the output layer."""
    model = build_classifier("wrn-10-1", num_classes=100, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 100)


def test_smallcnn_param_count_exact():
    """SmallCNN's parameter count equals the sum over its layer list in docs/method.md section 2."""

    def conv(cin: int, cout: int) -> int:
        return cin * cout * 9 + cout

    expected = conv(1, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64)
    expected += 7 * 7 * 64 * 100 + 100 + 100 * 10 + 10
    assert n_params(build_classifier("smallcnn", 10, 1)) == expected == 379_702


@pytest.mark.parametrize(("arch", "expected"), [("preact-resnet18", 11.17e6), ("wrn-34-10", 46.16e6)])
def test_cifar_param_counts(arch, expected):
    """PreAct ResNet-18 and WRN-34-10 have the usual parameter counts (within 1%)."""
    count = n_params(build_classifier(arch, 10, 3, CIFAR_MEAN, CIFAR_STD))
    assert abs(count - expected) / expected < 0.01


def test_normalization_inside_model():
    """With mean/std the classifier equals the bare net applied to (x - mean) / std."""
    torch.manual_seed(0)
    model = build_classifier("wrn-10-1", 10, 3, CIFAR_MEAN, CIFAR_STD).eval()
    assert isinstance(model, Classifier)
    assert isinstance(model.normalize, Normalize)
    assert model.normalize.mean.shape == (1, 3, 1, 1)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.net((x - mean) / std)
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert not torch.allclose(model(x), model.net(x), atol=1e-3)


def test_no_normalization_without_mean():
    """Without mean the classifier is the bare net."""
    torch.manual_seed(0)
    model = build_classifier("smallcnn", 10, 1).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(x))
    assert not any(k.startswith("normalize.") for k in model.state_dict())


@pytest.mark.parametrize("arch", ["smallcnn", "preact-resnet18", "wrn-16-2"])
def test_state_dict_keys_robustbench_safe(arch):
    """State-dict keys contain neither "model." nor "module." (RobustBench strips those)."""
    channels = 1 if arch == "smallcnn" else 3
    mean, std = (None, None) if arch == "smallcnn" else (CIFAR_MEAN, CIFAR_STD)
    keys = list(build_classifier(arch, 10, channels, mean, std).state_dict())
    assert keys
    assert not [k for k in keys if "model." in k or "module." in k]


@pytest.mark.parametrize(("family", "channels", "size"), [("mnist", 1, 28), ("cifar", 3, 32)])
def test_mask_net_shape_and_range(family, channels, size):
    """The mask nets return a mask of the input's shape with values strictly in (0,1)."""
    torch.manual_seed(0)
    net = build_mask_net(family, channels).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        mask = net(x)
    assert mask.shape == x.shape
    assert (mask > 0).all() and (mask < 1).all()
    keys = list(net.state_dict())
    assert not [k for k in keys if "model." in k or "module." in k]


@pytest.mark.parametrize("arch", ["resnet50", "wrn-34", "WRN-34-10", "preact-resnet"])
def test_unknown_architecture(arch):
    """Unknown architecture names raise UsageError naming the bad value and the allowed ones."""
    with pytest.raises(UsageError) as info:
        build_classifier(arch, 10, 3)
    assert repr(arch) in str(info.value)
    assert "preact-resnet18" in str(info.value) and "wrn-34-10" in str(info.value)


@pytest.mark.parametrize("arch", ["wrn-33-10", "wrn-4-1"])
def test_bad_wrn_depth(arch):
    """A WRN depth that is not 6n+4 (n >= 1) raises UsageError naming it."""
    with pytest.raises(UsageError) as info:
        build_classifier(arch, 10, 3)
    assert arch.split("-")[1] in str(info.value)


def test_bad_mean_std():
    """mean/std with the wrong number of channels raise UsageError."""
    with pytest.raises(UsageError):
        build_classifier("wrn-10-1", 10, 3, (0.5,), (0.2,))
    with pytest.raises(UsageError):
        build_classifier("wrn-10-1", 10, 3, CIFAR_MEAN, None)


def test_unknown_mask_family():
    """Unknown mask-net families raise UsageError naming the bad value."""
    with pytest.raises(UsageError) as info:
        build_mask_net("imagenet", 3)
    assert "'imagenet'" in str(info.value)
    assert "mnist" in str(info.value) and "cifar" in str(info.value)
