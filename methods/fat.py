"""FAT for TRADES (Zhang et al. 2020, "Attacks which do not kill training"), as in its official code."""

from __future__ import annotations

from cat_bench.attacks import eval_mode
from cat_bench.methods.base import Hparam, Method
from cat_bench.methods.trades import trades_loss


class FAT(Method):
    """TRADES' loss on friendly adversarial examples from early-stopped PGD (KL loss, eval mode).

    tau grows with the epoch (FAT code's dynamic tau): 0 up to `tau_epochs[0]`, then +1 after each
    listed epoch.
    """

    name = "fat"
    HPARAMS = {
        "beta": Hparam(6.0, 1.0, "FAT_for_TRADES.py --beta 6 (MNIST: TRADES' 1)"),
        "tau_epoch1": Hparam(30, 30, "FAT_for_TRADES.py adjust_tau: tau 0 up to epoch 30"),
        "tau_epoch2": Hparam(50, 50, "FAT_for_TRADES.py adjust_tau: tau 1 up to epoch 50"),
        "tau_epoch3": Hparam(70, 70, "FAT_for_TRADES.py adjust_tau: tau 2 up to epoch 70, then 3"),
    }

    def tau(self, epoch: int) -> int:
        """Early-stop budget at 1-based `epoch`."""
        h = self.hparams
        return sum(epoch > h[k] for k in ("tau_epoch1", "tau_epoch2", "tau_epoch3"))

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            with eval_mode(self.f):
                x_adv = self.pgd("kl", "gaussian", tau=self.tau(epoch))(self.f, x, y)
            loss = trades_loss(self.f(x), self.f(x_adv), y, self.hparams["beta"])
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
