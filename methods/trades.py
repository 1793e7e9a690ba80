"""TRADES (Zhang et al. 2019), with the official code's attack and loss reductions."""

from __future__ import annotations

import torch.nn.functional as F

from cat_bench.attacks import eval_mode, kl_div
from cat_bench.methods.base import Hparam, Method


def trades_loss(logits_nat, logits_adv, y, beta):
    """CE(f(x), y) + beta * KL(p(x) || p(x_adv)), KL summed over classes and averaged over the batch."""
    return F.cross_entropy(logits_nat.float(), y) + beta * kl_div(logits_nat, logits_adv).mean()


class TRADES(Method):
    """TRADES: the attack ascends KL(p(x) || p(x+delta)) from x + 0.001 N(0,1), model in eval mode."""

    name = "trades"
    HPARAMS = {
        "beta": Hparam(6.0, 1.0, "TRADES code: train_trades_cifar10.py --beta 6, train_trades_mnist.py --beta 1"),
    }

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            with eval_mode(self.f):
                x_adv = self.pgd("kl", "gaussian")(self.f, x, y)
            loss = trades_loss(self.f(x), self.f(x_adv), y, self.hparams["beta"])
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
