"""MART (Wang et al. 2020) as its official code runs it (YisenWang/MART).

Loss and attack: mart.py. Protocol: train_resnet.py (ResNet-18) and train_wideresnet.py (WRN).
"""

from __future__ import annotations

from cat_bench.attacks import eval_mode
from cat_bench.lazy import F, torch
from cat_bench.methods.base import Hparam, Method, Protocol

_CODE = "YisenWang/MART "


def mart_loss(logits_nat, logits_adv, y, beta):
    """BCE(p(x_adv), y) + beta * (1/B) sum_i KL(p(x_i) || p(x_adv_i)) * (1 - p_y(x_i))  (mart.py).

    BCE = CE(x_adv) - log(1.0001 - p_{y'}(x_adv) + 1e-12), y' the most likely wrong class. The KL is
    KLDivLoss(log(p_adv + 1e-12), p_nat): p_nat * (log p_nat - log(p_adv + 1e-12)), 0 where p_nat = 0.
    The weight (1.0000001 - p_y(x)) is not detached.
    """
    p_adv = F.softmax(logits_adv.float(), dim=1)
    p_nat = F.softmax(logits_nat.float(), dim=1)
    top2 = torch.argsort(p_adv, dim=1)[:, -2:]
    runner_up = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    bce = F.cross_entropy(logits_adv.float(), y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), runner_up)
    p_y = p_nat.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_nat, reduction="none").sum(1)
    return bce + float(beta) * ((kl * (1.0000001 - p_y)).sum() / len(y))


def _mart(epochs: int, lr: float, weight_decay: float, beta: float, script: str) -> Protocol:
    return Protocol(
        batch_size=128, epochs=epochs, optimizer="sgd", lr=lr, momentum=0.9, weight_decay=weight_decay,
        milestones=(74, 89, 99), attack_steps=10, attack_step=0.007, eps_decimals=3, selection="final",
        normalize=False, augment="crop-flip", hparams={"beta": beta},
        source=f"{_CODE}{script}: SGD {lr} momentum 0.9 wd {weight_decay}, batch 128, {epochs} epochs, lr x0.1 / "
               f"x0.01 / x0.001 from epochs 75 / 90 / 100 (1-based), --beta {beta:g}, --epsilon 0.031 "
               f"--step-size 0.007 --num-steps 10, RandomCrop(32, padding=4) + flip, no normalisation; the last epoch",
    )


class MART(Method):
    """MART: CE attack from x + 0.001 N(0,1) (not projected), model in eval mode, then the MART loss."""

    name = "mart"
    label = "MART"
    color = "#9467bd"
    SCRIPT_NETWORK = {"cifar": "a standard ResNet-18 (train_resnet.py; WRN-34-10 in train_wideresnet.py)"}
    HPARAMS = {
        "beta": Hparam(6.0, 6.0, "train_wideresnet.py --beta 6.0 (train_resnet.py: 5.0, set by its protocol); "
                                 "no MNIST script"),
    }
    PROTOCOLS = {
        ("cifar10", "wrn-34-10"): _mart(90, 0.1, 7e-4, 6.0, "train_wideresnet.py"),
        ("cifar10", "*"): _mart(120, 0.01, 3.5e-3, 5.0, "train_resnet.py"),
        ("cifar100", "wrn-34-10"): _mart(90, 0.1, 7e-4, 6.0, "train_wideresnet.py (no CIFAR-100 script)"),
        ("cifar100", "*"): _mart(120, 0.01, 3.5e-3, 5.0, "train_resnet.py (no CIFAR-100 script)"),
    }

    @classmethod
    def passes(cls, k, hparams):
        """The k steps, f(x), f(x_adv)."""
        return {"f": k + 2}

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            with eval_mode(self.f):
                x_adv = self.pgd("ce", "gaussian", clip_start=False)(self.f, x, y)
            loss = mart_loss(self.f(x), self.f(x_adv), y, self.hparams["beta"])
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
