"""Each method's loss equals a hand computation of its equation; CAT's step order and mask."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from cat_bench.errors import UsageError
from cat_bench.methods import METHODS, TrainAttack, get_method, resolve_hparams
from cat_bench.methods.base import Method

N, C = 6, 3


def nets(seed=0):
    torch.manual_seed(seed)
    f = nn.Sequential(nn.Flatten(), nn.Linear(16, C))
    g = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid())
    return f, g


def data(seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 1, 4, 4, generator=gen)
    y = torch.randint(0, C, (N,), generator=gen)
    x_adv = torch.clamp(x + 0.1 * torch.sign(torch.randn(x.shape, generator=gen)), 0, 1)
    return x, y, x_adv


def probs(f, x):
    """Softmax by hand, in float64."""
    z = f(x).detach().double().numpy()
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def kl(p, q):
    return sum(p[k] * math.log(p[k] / q[k]) for k in range(C))


def make(name, family="cifar", **overrides):
    f, g = nets()
    cls = get_method(name)
    hp = resolve_hparams(name, family, {k: str(v) for k, v in overrides.items()})
    extra = {"g": g} if cls.extra_networks("mnist", 1) else {}
    method = cls.build(f, extra, hp, TrainAttack(eps=0.1, alpha=0.025, steps=3))
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.5) for k, m in method.modules().items()}
    return method, opts


def fix_attack(method, x_adv):
    """Replace the training PGD by a fixed adversarial batch, so losses can be checked by hand."""
    method.pgd = lambda *a, **k: (lambda f, x, y: x_adv)


def test_natural_loss():
    x, y, _ = data()
    m, opts = make("natural")
    p = probs(m.f, x)
    hand = np.mean([-math.log(p[i, y[i]]) for i in range(N)])
    assert m.update(x, y, opts, 1)["loss"].item() == pytest.approx(hand, rel=1e-5)


def test_at_loss():
    x, y, x_adv = data()
    m, opts = make("at")
    fix_attack(m, x_adv)
    p = probs(m.f, x_adv)
    hand = np.mean([-math.log(p[i, y[i]]) for i in range(N)])
    assert m.update(x, y, opts, 1)["loss"].item() == pytest.approx(hand, rel=1e-5)


@pytest.mark.parametrize("name", ["trades", "fat"])
def test_trades_loss(name):
    """CE(f(x), y) + beta * (1/B) sum_i KL(p(x_i) || p(x_adv_i)), beta = 6 on CIFAR."""
    x, y, x_adv = data()
    m, opts = make(name)
    fix_attack(m, x_adv)
    p, q = probs(m.f, x), probs(m.f, x_adv)
    hand = np.mean([-math.log(p[i, y[i]]) for i in range(N)]) + 6.0 * np.mean([kl(p[i], q[i]) for i in range(N)])
    assert m.update(x, y, opts, 1)["loss"].item() == pytest.approx(hand, rel=1e-5)


def test_mart_loss():
    """BCE(x_adv) + beta * (1/B) sum_i KL(p(x_i) || p(x_adv_i)) (1 - p_y(x_i)), beta = 6."""
    x, y, x_adv = data()
    m, opts = make("mart")
    fix_attack(m, x_adv)
    p, q = probs(m.f, x), probs(m.f, x_adv)
    bce = [-math.log(q[i, y[i]]) - math.log(1.0001 - max(q[i, k] for k in range(C) if k != y[i]) + 1e-12)
           for i in range(N)]
    reg = [kl(p[i], q[i]) * (1.0000001 - p[i, y[i]]) for i in range(N)]
    hand = np.mean(bce) + 6.0 * np.mean(reg)
    assert m.update(x, y, opts, 1)["loss"].item() == pytest.approx(hand, rel=1e-4)


def cat_hand_losses(f_before, f_after, g_before, x, y, x_adv, beta, b, weighted=True, mask=True):
    """Eq. 13 with f before its step, Eq. 14 (KL sum / B, the code's) with the updated f and old g."""
    delta = x_adv - x
    m = g_before(x_adv).detach() if mask else torch.ones_like(x)
    x_cal = torch.clamp(x + m * delta, 0, 1)
    p, pc = probs(f_before, x), probs(f_before, x_cal)
    w = [(1.0000001 - p[i, y[i]]) if weighted else 1.0 for i in range(N)]
    lf = beta * np.mean([kl(p[i], pc[i]) for i in range(N)]) + np.mean(
        [w[i] * -math.log(p[i, y[i]]) for i in range(N)])
    pa, pc2 = probs(f_after, x_adv), probs(f_after, x_cal)
    lg = np.mean([kl(pa[i], pc2[i]) for i in range(N)]) + b * np.mean([-math.log(pc2[i, y[i]]) for i in range(N)])
    return lf, lg


@pytest.mark.parametrize("name", ["cat-cent", "cat-cw"])
def test_cat_losses_by_hand(name):
    """L_f (Eq. 13) in float64 by hand with f before its step; L_g (Eq. 14) with the just-updated f.
    (The whole step against the official code is tests/test_golden_steps.py.)"""
    x, y, x_adv = data()
    m, opts = make(name, beta=5, b=0.05)
    fix_attack(m, x_adv)
    f0, g0 = copy.deepcopy(m.f), copy.deepcopy(m.g)
    out = m.update(x, y, opts, 1)
    lf, lg = cat_hand_losses(f0, m.f, g0, x, y, x_adv, beta=5.0, b=0.05)
    assert out["loss_f"].item() == pytest.approx(lf, rel=1e-5)
    assert out["loss_g"].item() == pytest.approx(lg, rel=1e-5)
    _, lg_old_f = cat_hand_losses(f0, f0, g0, x, y, x_adv, beta=5.0, b=0.05)
    assert abs(lg_old_f - lg) > 1e-4  # g really saw the updated f
    assert any(not torch.equal(a, b) for a, b in zip(g0.parameters(), m.g.parameters()))


@pytest.mark.parametrize("family,shape", [("mnist", (4, 1, 28, 28)), ("cifar", (4, 3, 32, 32))])
def test_cat_mask_shape_and_range(family, shape):
    """The real mask nets g (docs/method.md s2): a per-pixel mask of the input's shape, strictly inside (0, 1)."""
    from cat_bench.models import build_mask_net

    torch.manual_seed(0)
    g = build_mask_net(family, shape[1]).eval()
    x = torch.rand(shape)
    mask = g(x)
    assert mask.shape == x.shape
    assert (mask > 0).all() and (mask < 1).all()
    assert mask.std() > 0 and not torch.equal(mask[0], mask[1])  # per pixel and per image, not a constant


@pytest.mark.parametrize("ablation,weighted,mask", [("A1", False, False), ("A2", False, True)])
def test_cat_ablations(ablation, weighted, mask):
    x, y, x_adv = data()
    m, opts = make("cat-cent", ablation=ablation)
    fix_attack(m, x_adv)
    f0, g0 = copy.deepcopy(m.f), copy.deepcopy(m.g)
    out = m.update(x, y, opts, 1)
    lf, _ = cat_hand_losses(f0, m.f, g0, x, y, x_adv, beta=5.0, b=0.05, weighted=weighted, mask=mask)
    assert out["loss_f"].item() == pytest.approx(lf, rel=1e-5)
    assert ("loss_g" in out) == mask
    assert set(m.modules()) == ({"f", "g"} if mask else {"f"})


def test_figure_legends_name_the_ablations_and_the_methods():
    """Figure 4's legend comes from the method: A1 and A2 by name, the full CAT and every other method by label."""
    cat = get_method("cat-cent")
    assert [cat.variant_label({"ablation": a}) for a in ("none", "A1", "A2")] == ["CATcent", "A1", "A2"]
    assert get_method("cat-cw").variant_label({"ablation": "none"}) == "CATcw"
    assert all(cls.variant_label(resolve_hparams(name, "mnist", {})) == cls.label for name, cls in METHODS.items())


def test_defaults_follow_the_dataset_family():
    assert resolve_hparams("cat-cent", "cifar", {})["beta"] == 5.0
    assert resolve_hparams("cat-cent", "mnist", {})["b"] == 0.3
    assert resolve_hparams("cat-cw", "mnist", {})["kappa"] == 150.0
    assert resolve_hparams("cat-cw", "cifar", {})["pgd_loss"] == "cw"
    assert resolve_hparams("trades", "mnist", {})["beta"] == 1.0


def test_every_hparam_declares_its_source():
    for cls in METHODS.values():
        assert issubclass(cls, Method)
        for key, hp in cls.HPARAMS.items():
            assert hp.source, (cls.name, key)


@pytest.mark.parametrize("overrides,needle", [
    ({"gamma": "1"}, "gamma"), ({"beta": "abc"}, "abc"), ({"pgd_loss": "l2"}, "l2"), ({"beta": "nan"}, "nan"),
])
def test_bad_overrides_are_named(overrides, needle):
    with pytest.raises(UsageError, match=needle):
        resolve_hparams("cat-cent", "cifar", overrides)


@pytest.mark.parametrize("method,overrides", [
    ("trades", {"beta": "-5"}), ("cat-cw", {"kappa": "-1"}), ("fat", {"tau_epoch1": "-3"}),
    ("at-awp", {"awp_gamma": "-0.1"}),
])
def test_an_override_outside_its_range_is_named_with_the_range(method, overrides):
    """A hyperparameter outside its declared range is refused at the edge (`--set beta=-5` used to start a run)."""
    (key, raw), = overrides.items()
    with pytest.raises(UsageError, match=f"bad value '{raw}' for {key} of {method}: allowed: 0 <= {key}"):
        resolve_hparams(method, "cifar", overrides)


def test_every_default_is_inside_its_declared_range():
    for cls in METHODS.values():
        for key, hp in cls.HPARAMS.items():
            for family in ("mnist", "cifar"):
                value = hp.default(family)
                if hp.choices is None and value is not None:
                    assert hp.low <= value <= hp.high, (cls.name, key, family, value)


def test_unknown_method_lists_the_allowed_ones():
    with pytest.raises(UsageError, match="cat-cent"):
        get_method("cat")
