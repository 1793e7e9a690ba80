"""Calibrated Adversarial Training (Huang et al., ACML 2021): CATcent and CATcw (docs/method.md s1).

Everything about CAT is here: its losses (Eq. 13, 14), its one training step (Algorithm 1), its
authors' protocol (TienjinHuang/Calibrated-adversarial-training, Codes/Train_MNIST.py,
Codes/Train_CIFAR10.py, Codes/Train_CIFAR100.py), its mask net g (docs/method.md s2) and its mask
health check.
"""

from __future__ import annotations

import contextlib
import math

from cat_bench.attacks import kl_div
from cat_bench.lazy import F, torch
from cat_bench.methods.base import Hparam, Method, Protocol
from cat_bench.models import batchnorms, build_mask_net

ABLATIONS = ("none", "A1", "A2")
_CODE = "TienjinHuang/Calibrated-adversarial-training Codes/"
MASK_HEALTHY = (0.01, 0.99)  # an epoch's mean mask outside this range: collapsed (M ~ 0) or saturated (M ~ 1)



def calibrate(x: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor | float, clip: bool = True) -> torch.Tensor:
    """Calibrated adversarial example x_cal = clip(x + M * delta, 0, 1) (Eq. 10-11).

    `clip=False`: x + M * delta as the MNIST code computes it (docs/method.md s4, paper protocol).
    """
    x_cal = x + mask * delta
    return torch.clamp(x_cal, 0.0, 1.0) if clip else x_cal


def loss_f(logits_nat: torch.Tensor, logits_cal: torch.Tensor, y: torch.Tensor, beta: float,
           weighted: bool) -> torch.Tensor:
    """L_f = beta * KL(p(x) || p(x_cal)) + (1/B) sum_i (1 - p_y(x_i)) CE(f(x_i), y_i)  (Eq. 13).

    KL summed over classes and batch, times 1/B. The weight (1.0000001 - p_y(x)) is not detached
    (code); `weighted=False` is plain CE (ablations A1, A2).
    """
    ce = F.cross_entropy(logits_nat.float(), y, reduction="none")
    if weighted:
        p_y = F.softmax(logits_nat.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        ce = ce * (1.0000001 - p_y)
    return beta * kl_div(logits_nat, logits_cal).sum() / len(y) + ce.sum() / len(y)


def loss_g(logits_adv: torch.Tensor, logits_cal: torch.Tensor, y: torch.Tensor, b: float,
           kl_reduction: str = "batchmean") -> torch.Tensor:
    """L_g = KL(p(x+delta) || p(x_cal')) + b * CE(f(x_cal'), y)  (Eq. 14).

    "batchmean" (default, the code's): the KL summed over classes and batch, times 1/B
    (`(1.0 / batch_size) * KLDivLoss(size_average=False)` in Train_MNIST.py and
    `KLDivLoss(reduction="sum")` in Train_CIFAR10.py). "sum" (option): not divided by B. CE is
    the batch mean in both.
    """
    kl = kl_div(logits_adv, logits_cal).sum()
    if kl_reduction == "batchmean":
        kl = kl / len(y)
    return kl + b * F.cross_entropy(logits_cal.float(), y)


@contextlib.contextmanager
def _bn_twice(net: torch.nn.Module):
    """One train-mode forward of `net` that leaves its BatchNorm running statistics as two forwards
    of the same batch do: momentum m twice is 1 - (1 - m)^2 once, and the batch count moves by 2."""
    norms = [m for m in batchnorms(net) if m.training and m.track_running_stats and m.momentum is not None]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1 - (1 - m.momentum) ** 2
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.add_(1)


def _cifar(epochs: int, milestones: tuple[int, ...], script: str) -> Protocol:
    return Protocol(
        batch_size=128, epochs=epochs, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
        milestones=milestones, attack_steps=10, attack_step=2 / 255, selection="nat+rob",
        augment="crop-flip-reflect",
        source=f"{_CODE}{script}: SGD 0.1 momentum 0.9 wd 5e-4 for f and g, batch 128, {epochs} epochs, "
               f"lr_schedule(epoch) /10 at {milestones[0]}, /100 at {milestones[1]}; PGD-10 step 2/255 "
               f"(train mode); reflect-padded crop + flip (utils.pad); keeps the best test nat + PGD-10 acc",
    )


class CATcent(Method):
    """CAT with a cross-entropy PGD (CATcent). One step: attack, update f, then update g.

    Eq. 9: delta = PGD on f (train mode, code) from a uniform start. Eq. 10-11: M = g(x+delta),
    x_cal = x + M delta (clipped to [0,1] unless the MNIST paper protocol). Eq. 13: f steps on L_f
    with M constant. Eq. 14: g steps on L_g computed with the just-updated f, whose weights are
    not stepped. Forwards run in Train_CIFAR10.py's order, which decides BatchNorm's running
    statistics: PGD, its restart-bookkeeping forward, g, f(x_cal), f(x); f(x+delta), f(x_cal');
    a clean f(x) after both steps.

    The code runs g(x+delta) twice, before f's step and again for g's, with the same weights and
    input; here it runs once and its graph serves g's step (`_bn_twice` keeps g's BatchNorm
    statistics as the two forwards leave them).
    """

    name = "cat-cent"
    label = "CATcent"
    color = "#2ca02c"
    mask_figure = True
    PAPER = {"title": "Calibrated Adversarial Training",
             "authors": "Tianjin Huang, Vlado Menkovski, Yulong Pei, Mykola Pechenizkiy",
             "venue": "ACML 2021", "link": "https://arxiv.org/abs/2110.00623"}
    HEALTH_FLAGS = {"mask_flag": "mask"}
    TRACE_KEY = "mask_mean"  # absent under ablation A1 (no mask)
    TRACE_LABEL = "mean mask"
    HEALTH_BAND = MASK_HEALTHY
    clips_on_mnist = False  # Train_MNIST.py clamps delta to [-eps, eps] only (docs/method.md s4)
    HPARAMS = {
        "beta": Hparam(5.0, 1.0, "Train_CIFAR10.py --b 5 (paper's a); Train_MNIST.py: KL term unweighted (1)"),
        "b": Hparam(0.05, 0.3, "Train_CIFAR10.py --b1 0.05; Train_MNIST.py: 0.3*temp_loss1"),
        "kappa": Hparam(50.0, 150.0, "cwloss(confidence=50) in Train_CIFAR10.py, 150 in Train_MNIST.py"),
        "rs_scale": Hparam(None, 0.1, "attack_pgd: delta.uniform_(-eps, eps) (CIFAR); pgd_linf: U(-0.1, 0.1) (MNIST)"),
        "pgd_loss": Hparam("ce", "ce", "docs/method.md s1: CATcent ascends CE; Fig. 5 compares ce / kl / cw",
                           choices=("ce", "kl", "cw")),
        "g_kl_reduction": Hparam("batchmean", "batchmean",
                                 "Train_MNIST.py / Train_CIFAR10.py: (1.0 / batch_size) * KLDivLoss(sum) in L_g; "
                                 "'sum' (not / B) is an option", choices=("batchmean", "sum")),
        "ablation": Hparam("none", "none", "docs/method.md s1 (Sec. 5.2.3): A1 = no mask + plain CE; A2 = mask + plain CE",
                           choices=ABLATIONS),
    }
    PROTOCOLS = {
        ("mnist", "*"): Protocol(
            batch_size=100, epochs=40, optimizer="adam", lr=1e-3, momentum=0.0, milestones=(31,),
            attack_steps=20, attack_step_ratio=1 / 20, selection="nat+rob", normalize=False,
            source=f"{_CODE}Train_MNIST.py: Adam 1e-3 for f and g, set to 1e-4 when t == 30 (after 31 "
                   f"epochs), 40 epochs, batch 100, PGD-20 of step eps/20, no [0,1] clip; keeps the "
                   f"best test_err + adv_err (PGD-20, eps 0.3, step 0.015)",
        ),
        ("cifar10", "wrn-34-10"): _cifar(140, (100, 110), "Train_CIFAR10.py --model WideResNet"),
        ("cifar10", "*"): _cifar(140, (100, 120), "Train_CIFAR10.py --model PreActResNet18"),
        ("cifar100", "wrn-34-10"): _cifar(120, (100, 110), "Train_CIFAR100.py --model WideResNet"),
        ("cifar100", "*"): _cifar(120, (100, 110), "Train_CIFAR100.py"),
    }

    @classmethod
    def reduction(cls, hparams):
        return "mixed" if hparams["g_kl_reduction"] == "sum" else "mean"  # "sum": Eq. 14's KL summed, its CE a mean

    @classmethod
    def variant_label(cls, hparams):
        """Figure 4's legend (Sec. 5.2.3): A1 and A2 by name, the full method by its label."""
        ablation = hparams.get("ablation", "none")
        return cls.label if ablation == "none" else ablation

    @classmethod
    def mask_rows(cls, extra, x, x_adv, clip):
        """Figure 2's rows: the mask M = g(x + delta) (Eq. 10) and x_cal = x + M delta (Eq. 11)."""
        mask = extra["g"](x_adv)
        return mask, calibrate(x, x_adv - x, mask, clip)

    @classmethod
    def extra_networks(cls, family, in_channels):
        return {"g": build_mask_net(family, in_channels)}  # built under A1 too: its initialisation draws from the RNG

    @classmethod
    def passes(cls, k, hparams):
        """k PGD steps, a tracking forward, f(x_cal), f(x), then f(x + delta) and f(x_cal') for g's step
        (back to g's input) and a tracking forward; g: one forward (f's step reuses it) and its backward."""
        return {"f": k + 4 + 1, **({"g": 1} if hparams.get("ablation") != "A1" else {})}

    @classmethod
    def epoch_means(cls, means):
        """The mask's std over every pixel of the epoch from its mean and mean square."""
        if "mask_sq" in means:
            means["mask_std"] = math.sqrt(max(means.pop("mask_sq") - means["mask_mean"] ** 2, 0.0))
        return means

    @classmethod
    def check_health(cls, means):
        """A mean mask outside MASK_HEALTHY: x_cal is x (collapsed) or x + delta (saturated), no calibration."""
        flag = cls.health(means.get(cls.TRACE_KEY))
        if flag is None:
            return []
        return [("mask_flag", flag, f"mask {flag} (mean mask {means['mask_mean']:.4g}; healthy within {MASK_HEALTHY}): "
                                    f"x_cal is {'x' if flag == 'collapsed' else 'x + delta'}, CAT does not calibrate")]

    def trace(self, losses):
        """The mask's mean and std over its pixels, and the two losses (trace.jsonl)."""
        mean, sq = losses["mask_mean"].item(), losses["mask_sq"].item()
        return {"mask_mean": mean, "mask_std": math.sqrt(max(sq - mean ** 2, 0.0)),
                **{k: losses[k].item() for k in ("loss_f", "loss_g") if k in losses}}

    def modules(self):
        if self.hparams["ablation"] == "A1":
            return {"f": self.f}
        return {"f": self.f, "g": self.g}

    def update(self, x, y, optimizers, epoch):
        h = self.hparams
        clip = self.attack.clip
        use_mask = h["ablation"] != "A1"
        attack = self.pgd(h["pgd_loss"], "uniform", rs_scale=h["rs_scale"], kappa=h["kappa"])
        with self.autocast():
            x_adv = attack(self.f, x, y)
            self.track_bn(x_adv)
            delta = x_adv - x
            mask = 1.0
            if use_mask:
                with _bn_twice(self.g):
                    mask = self.g(x_adv)
            logits_cal = self.f(calibrate(x, delta, mask.detach() if use_mask else mask, clip))
            logits_nat = self.f(x)
            lf = loss_f(logits_nat, logits_cal, y, h["beta"], weighted=h["ablation"] == "none")
        self.step(optimizers["f"], lf)
        losses = {"loss_f": lf.detach()}
        if use_mask:
            with self.autocast():
                with torch.no_grad():
                    logits_adv = self.f(x_adv)
                lg = loss_g(logits_adv, self.f(calibrate(x, delta, mask, clip)), y, h["b"], h["g_kl_reduction"])
            g_params = [p for p in self.g.parameters() if p.requires_grad]
            grads = torch.autograd.grad(lg, g_params)
            for p, grad in zip(g_params, grads):
                p.grad = grad
            self.apply(optimizers["g"])
            losses["loss_g"] = lg.detach()
            losses["mask_mean"] = mask.detach().float().mean()
            losses["mask_sq"] = mask.detach().float().square().mean()
        with self.autocast():
            self.track_bn(x)
        return losses


class CATcw(CATcent):
    """CAT with the C&W margin PGD (CATcw); otherwise identical to CATcent."""

    name = "cat-cw"
    label = "CATcw"
    color = "#d62728"
    HPARAMS = {**CATcent.HPARAMS,
               "pgd_loss": Hparam("cw", "cw", "Train_CIFAR10.py --attackloss cw; Train_MNIST.py --attacktrain cw",
                                  choices=("ce", "kl", "cw"))}
