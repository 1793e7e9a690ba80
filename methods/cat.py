"""Calibrated Adversarial Training (Huang et al., ACML 2021): CATcent and CATcw (METHOD.md s1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cat_bench.attacks import kl_div
from cat_bench.methods.base import Hparam, Method

ABLATIONS = ("none", "A1", "A2")


def calibrate(x: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor | float) -> torch.Tensor:
    """Calibrated adversarial example x_cal = clip(x + M * delta, 0, 1) (Eq. 10-11)."""
    return torch.clamp(x + mask * delta, 0.0, 1.0)


def loss_f(logits_nat: torch.Tensor, logits_cal: torch.Tensor, y: torch.Tensor, beta: float,
           weighted: bool) -> torch.Tensor:
    """L_f = beta * KL(p(x) || p(x_cal)) + (1/B) sum_i (1 - p_y(x_i)) CE(f(x_i), y_i)  (Eq. 13).

    KL summed over classes, averaged over the batch. The weight (1 - p_y(x) + 1e-7) is not detached
    (code); `weighted=False` is plain CE (ablations A1, A2).
    """
    ce = F.cross_entropy(logits_nat.float(), y, reduction="none")
    if weighted:
        p_y = F.softmax(logits_nat.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        ce = (1.0 - p_y + 1e-7) * ce
    return beta * kl_div(logits_nat, logits_cal).mean() + ce.mean()


def loss_g(logits_adv: torch.Tensor, logits_cal: torch.Tensor, y: torch.Tensor, b: float,
           kl_reduction: str = "sum") -> torch.Tensor:
    """L_g = KL(p(x+delta) || p(x_cal')) + b * CE(f(x_cal'), y)  (Eq. 14).

    METHOD.md states the "sum / B" reduction for Eq. 13 only. For Eq. 14 the KL is summed over
    classes and over the batch by default ("sum", as `KLDivLoss(size_average=False)` in the TRADES
    code CAT builds on; inferred): with "batchmean" the mask collapses to 0 within ten Adam steps
    on MNIST (measured, see README) and CAT degenerates to natural training. CE is averaged.
    """
    kl = kl_div(logits_adv, logits_cal)
    kl = kl.sum() if kl_reduction == "sum" else kl.mean()
    return kl + b * F.cross_entropy(logits_cal.float(), y)


class CATcent(Method):
    """CAT with a cross-entropy PGD (CATcent). One step: attack, update f, then update g.

    Eq. 9: delta = PGD on f (train mode, code) from a uniform start. Eq. 10-11: M = g(x+delta),
    x_cal = clip(x + M delta, 0, 1). Eq. 13: f steps on L_f with M constant. Eq. 14: g steps on
    L_g computed with the just-updated f, whose weights are not stepped.
    """

    name = "cat-cent"
    uses_mask_net = True
    HPARAMS = {
        "beta": Hparam(5.0, 1.0, "METHOD.md s1: a (beta) = 5 on CIFAR, 1 on MNIST (code's b)"),
        "b": Hparam(0.05, 0.3, "METHOD.md s1: b = 0.05 on CIFAR, 0.3 on MNIST (code's b1)"),
        "kappa": Hparam(50.0, 150.0, "METHOD.md s1: CW margin kappa 50 on CIFAR, 150 on MNIST (code)"),
        "rs_scale": Hparam(None, 0.1, "METHOD.md s1: uniform start in [-eps, eps] (CIFAR), [-0.1, 0.1] (MNIST) (code)"),
        "pgd_loss": Hparam("ce", "ce", "METHOD.md s1: CATcent ascends CE; Fig. 5 compares ce / kl / cw",
                           choices=("ce", "kl", "cw")),
        "g_kl_reduction": Hparam("sum", "sum", "inferred (METHOD.md gives '/B' for Eq. 13 only); see loss_g",
                                 choices=("sum", "batchmean")),
        "ablation": Hparam("none", "none", "METHOD.md s1 (Sec. 5.2.3): A1 = no mask + plain CE; A2 = mask + plain CE",
                           choices=ABLATIONS),
    }

    def modules(self):
        if self.hparams["ablation"] == "A1":
            return {"f": self.f}
        return {"f": self.f, "g": self.g}

    def update(self, x, y, optimizers, epoch):
        h = self.hparams
        use_mask = h["ablation"] != "A1"
        attack = self.pgd(h["pgd_loss"], "uniform", rs_scale=h["rs_scale"], kappa=h["kappa"])
        with self.autocast():
            x_adv = attack(self.f, x, y)
            delta = x_adv - x
            if use_mask:
                with torch.no_grad():
                    mask = self.g(x_adv)
            else:
                mask = 1.0
            logits_nat = self.f(x)
            lf = loss_f(logits_nat, self.f(calibrate(x, delta, mask)), y, h["beta"], weighted=h["ablation"] == "none")
        self.step(optimizers["f"], lf)
        losses = {"loss_f": lf.detach()}
        if use_mask:
            with self.autocast():
                mask = self.g(x_adv)
                with torch.no_grad():
                    logits_adv = self.f(x_adv)
                lg = loss_g(logits_adv, self.f(calibrate(x, delta, mask)), y, h["b"], h["g_kl_reduction"])
            g_params = [p for p in self.g.parameters() if p.requires_grad]
            grads = torch.autograd.grad(lg, g_params)
            for p, grad in zip(g_params, grads):
                p.grad = grad
            optimizers["g"].step()
            losses["loss_g"] = lg.detach()
            losses["mask_mean"] = mask.detach().float().mean()
        return losses


class CATcw(CATcent):
    """CAT with the C&W margin PGD (CATcw); otherwise identical to CATcent."""

    name = "cat-cw"
    HPARAMS = {**CATcent.HPARAMS,
               "pgd_loss": Hparam("cw", "cw", "METHOD.md s1: CATcw ascends the C&W margin loss",
                                  choices=("ce", "kl", "cw"))}
