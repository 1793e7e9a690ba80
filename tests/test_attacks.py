"""Attack properties: inside the eps-ball and [0,1], stronger than clean, C&W margin sign, FAT early stop."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cat_bench.attacks import PGD, cw_margin, kl_div


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def batch(seed=1, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("loss", ["ce", "cw", "kl"])
@pytest.mark.parametrize("start", ["none", "uniform", "gaussian"])
def test_pgd_stays_in_ball_and_box(loss, start):
    model, (x, y) = tiny_model(), batch()
    x[:4] = 0.0  # corners of the box, where clipping matters
    x[4:8] = 1.0
    eps = 0.1
    x_adv = PGD(eps=eps, alpha=0.05, steps=7, loss=loss, random_start=start, kappa=5.0)(model, x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not torch.equal(x_adv, x)


def test_pgd_raises_the_loss_above_clean():
    model, (x, y) = tiny_model(), batch()
    clean = F.cross_entropy(model(x), y, reduction="none")
    x_adv = PGD(eps=0.2, alpha=0.02, steps=20)(model, x, y)
    adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert adv.mean() > clean.mean() + 0.05
    assert (adv >= clean - 1e-6).float().mean() > 0.9


def test_fgsm_is_one_signed_step_of_size_eps():
    model, (x, y) = tiny_model(), batch()
    x = 0.25 + 0.5 * x  # far from the box's faces: no clipping
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
    x_adv = PGD(eps=0.1, alpha=0.1, steps=1)(model, x, y)
    assert torch.allclose(x_adv, x + 0.1 * grad.sign(), atol=1e-6)


def test_cw_margin_sign_and_value():
    logits = torch.tensor([[5.0, 1.0, 2.0],   # correct by margin 3
                           [1.0, 4.0, 0.0],   # wrong: z_y - max_other = -3
                           [2.0, 1.5, 0.0]])  # correct by margin 0.5
    y = torch.tensor([0, 0, 0])
    assert torch.allclose(cw_margin(logits, y, kappa=0.0), torch.tensor([-3.0, 0.0, -0.5]))
    # kappa keeps pushing misclassified points until their margin is below -kappa
    assert torch.allclose(cw_margin(logits, y, kappa=5.0), torch.tensor([-8.0, -2.0, -5.5]))
    assert (cw_margin(logits, y, kappa=1.0) <= 0).all()


def test_kl_div_matches_definition():
    p, q = torch.randn(4, 5), torch.randn(4, 5)
    P, Q = p.softmax(1), q.softmax(1)
    assert torch.allclose(kl_div(p, q), (P * (P / Q).log()).sum(1), atol=1e-6)
    assert torch.allclose(kl_div(p, p), torch.zeros(4), atol=1e-6)


def test_fat_early_stop_freezes_misclassified_points():
    model, (x, y) = tiny_model(), batch()
    wrong = model(x).argmax(1) != y
    assert wrong.any() and (~wrong).any()
    x_adv = PGD(eps=0.3, alpha=0.05, steps=5, tau=0)(model, x, y)
    assert torch.equal(x_adv[wrong], x[wrong])  # misclassified at the start: not moved with tau=0
    assert not torch.equal(x_adv[~wrong], x[~wrong])
    x_tau = PGD(eps=0.3, alpha=0.05, steps=5, tau=2)(model, x, y)
    moved = (x_tau[wrong] - x[wrong]).abs().amax((1, 2, 3))
    assert (moved > 0).all() and (moved <= 2 * 0.05 + 1e-6).all()  # tau=2: at most two more steps


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="hinge"):
        PGD(eps=0.1, alpha=0.1, steps=1, loss="hinge")
