"""Madry-style adversarial training as run by Rice et al. 2020 (robust_overfitting code)."""

from __future__ import annotations

import torch.nn.functional as F

from cat_bench.methods.base import Hparam, Method


class AT(Method):
    """PGD adversarial training: CE on PGD examples (Madry et al. 2018; Rice et al. 2020).

    The attack ascends CE from a uniform random start with the model in train mode, as in Rice
    et al.'s code; their early stopping is the core's best-checkpoint selection (METHOD.md s3).
    """

    name = "at"
    HPARAMS = {
        "random_start": Hparam("uniform", "uniform", "Rice et al. code: delta ~ U(-eps, eps)",
                               choices=("none", "uniform")),
    }

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            x_adv = self.pgd("ce", self.hparams["random_start"])(self.f, x, y)
            loss = F.cross_entropy(self.f(x_adv).float(), y)
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
