"""FAT for TRADES (Zhang et al. 2020, "Attacks which do not kill training make adversarial learning
stronger") as its official code runs it (zjfheart/Friendly-Adversarial-Training FAT_for_TRADES.py,
earlystop.py)."""

from __future__ import annotations

from dataclasses import replace

from cat_bench.attacks import eval_mode
from cat_bench.methods.base import Hparam, Method, Protocol
from cat_bench.methods.trades import trades_loss

_CIFAR = Protocol(
    batch_size=128, epochs=85, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4, milestones=(74, 89),
    attack_steps=10, attack_step=0.007, eps_decimals=3, selection="final", normalize=False, augment="crop-flip",
    source="zjfheart/Friendly-Adversarial-Training FAT_for_TRADES.py: SGD 0.1 momentum 0.9 wd 2e-4, batch 128, "
           "85 epochs, lr x0.1 from epoch 75 (1-based; its 90 is never reached), --epsilon 0.031 --step_size 0.007 "
           "--num_steps 10, RandomCrop(32, padding=4) + flip, no normalisation; the last epoch",
)


class FAT(Method):
    """TRADES' loss on friendly adversarial examples from early-stopped PGD (KL loss, eval mode).

    The start x + 0.001 N(0,1) is clipped to [0,1] (earlystop.py). tau grows with the epoch (the
    code's dynamic tau): 0 up to `tau_epoch1`, then +1 after each listed epoch. One forward of x
    serves both of TRADES' terms (FAT's TRADES_loss).
    """

    name = "fat"
    label = "FAT"
    color = "#8c564b"
    SCRIPT_NETWORK = {"cifar": "WRN-34-10 (FAT_for_TRADES.py's default network)"}
    HPARAMS = {
        "beta": Hparam(6.0, 1.0, "FAT_for_TRADES.py --beta 6.0 (no MNIST script; TRADES' MNIST 1.0)"),
        "tau_epoch1": Hparam(30, 30, "FAT_for_TRADES.py adjust_tau: tau 0 up to epoch 30"),
        "tau_epoch2": Hparam(50, 50, "FAT_for_TRADES.py adjust_tau: tau 1 up to epoch 50"),
        "tau_epoch3": Hparam(70, 70, "FAT_for_TRADES.py adjust_tau: tau 2 up to epoch 70, then 3"),
    }
    PROTOCOLS = {
        ("cifar10", "*"): _CIFAR,
        ("cifar100", "*"): replace(_CIFAR, source=_CIFAR.source + " (no CIFAR-100 script)"),
    }

    def tau(self, epoch: int) -> int:
        """Early-stop budget at 1-based `epoch`."""
        h = self.hparams
        return sum(epoch > h[k] for k in ("tau_epoch1", "tau_epoch2", "tau_epoch3"))

    @classmethod
    def passes(cls, k, hparams):
        """As TRADES with one clean forward."""
        return {"f": k + 2 + 1 / 3}

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            with eval_mode(self.f):
                x_adv = self.pgd("kl", "gaussian", tau=self.tau(epoch))(self.f, x, y)
            loss = trades_loss(self.f(x), self.f(x_adv), y, self.hparams["beta"])
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
