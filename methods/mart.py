"""MART (Wang et al. 2020), with the official code's boosted CE and weighted KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cat_bench.attacks import eval_mode, kl_div
from cat_bench.methods.base import Hparam, Method


def mart_loss(logits_nat, logits_adv, y, beta):
    """BCE(p(x_adv), y) + beta * (1/B) sum KL(p(x) || p(x_adv)) * (1 - p_y(x)).

    BCE = CE(x_adv) - log(1 - max_{k != y} p_k(x_adv)), with the 1.0001 / 1e-12 / 1.0000001
    constants of the MART code.
    """
    p_adv = F.softmax(logits_adv.float(), dim=1)
    p_nat = F.softmax(logits_nat.float(), dim=1)
    top2 = p_adv.topk(2, dim=1).indices
    runner_up = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
    bce = F.cross_entropy(logits_adv.float(), y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), runner_up)
    p_y = p_nat.gather(1, y[:, None]).squeeze(1)
    kl = (p_nat * (torch.log(p_nat + 1e-12) - torch.log(p_adv + 1e-12))).sum(1)
    return bce + beta * (kl * (1.0000001 - p_y)).mean()


class MART(Method):
    """MART: CE attack from x + 0.001 N(0,1) in eval mode, then the MART loss."""

    name = "mart"
    HPARAMS = {
        "beta": Hparam(6.0, 6.0, "MART code: train_wideresnet.py --beta 6 (no MNIST setting; same value)"),
    }

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            with eval_mode(self.f):
                x_adv = self.pgd("ce", "gaussian")(self.f, x, y)
            loss = mart_loss(self.f(x), self.f(x_adv), y, self.hparams["beta"])
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
