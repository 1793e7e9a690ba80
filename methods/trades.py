"""TRADES (Zhang et al. 2019) as its official code runs it (yaodongyu/TRADES).

Loss and attack: trades.py. Protocol: train_trades_cifar10.py and train_trades_mnist.py (with
models/small_cnn.py, the MNIST model).
"""

from __future__ import annotations

from dataclasses import replace

from cat_bench.attacks import eval_mode, kl_div
from cat_bench.lazy import F
from cat_bench.methods.base import Hparam, Method, Protocol

_CODE = "yaodongyu/TRADES "


def trades_loss(logits_nat, logits_adv, y, beta, logits_nat_kl=None):
    """CE(f(x), y) + beta * (1/B) sum_i KL(p(x_i) || p(x_adv_i)), KL summed over classes (trades.py).

    trades.py takes the KL's p(x) from a second forward of x (`logits_nat_kl`), which differs from
    the first only through dropout (TRADES' MNIST SmallCNN); gradients flow through both.
    """
    target = logits_nat if logits_nat_kl is None else logits_nat_kl
    return F.cross_entropy(logits_nat.float(), y) + beta * (kl_div(target, logits_adv).sum() / len(y))


_CIFAR = Protocol(
    batch_size=128, epochs=76, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4,
    milestones=(74, 89, 99), attack_steps=10, attack_step=0.007, eps_decimals=3, selection="final",
    normalize=False, augment="crop-flip",
    source=f"{_CODE}train_trades_cifar10.py: SGD 0.1 momentum 0.9 wd 2e-4, batch 128, 76 epochs, lr x0.1 "
           f"from epoch 75 (1-based; its 90 and 100 are never reached), --epsilon 0.031 --step-size 0.007 "
           f"--num-steps 10, RandomCrop(32, padding=4) + flip, no normalisation; the last epoch",
)


class TRADES(Method):
    """TRADES: the attack ascends KL(p(x) || p(x+delta)) from x + 0.001 N(0,1), model in eval mode.

    The start is not projected (trades.py). The loss then runs f in train mode on x, x_adv and x
    again, in that order (trades.py), which decides dropout masks and BatchNorm statistics.
    """

    name = "trades"
    label = "TRADES"
    color = "#ff7f0e"
    DEFAULT_ARCH = {"mnist": "trades-smallcnn", "cifar": "preact-resnet18"}
    SCRIPT_NETWORK = {"cifar": "WRN-34-10 (train_trades_cifar10.py: WideResNet())"}
    HPARAMS = {
        "beta": Hparam(6.0, 1.0, "train_trades_cifar10.py --beta 6.0; train_trades_mnist.py --beta 1.0"),
    }
    PROTOCOLS = {
        ("cifar10", "*"): _CIFAR,
        ("cifar100", "*"): replace(_CIFAR, source=_CIFAR.source + " (no CIFAR-100 script)"),
        ("mnist", "*"): Protocol(
            batch_size=128, epochs=100, optimizer="sgd", lr=0.01, momentum=0.9, milestones=(54, 74, 89),
            attack_steps=40, attack_step=0.01, selection="final", normalize=False,
            source=f"{_CODE}train_trades_mnist.py: SmallCNN (models/small_cnn.py), SGD 0.01 momentum 0.9, "
                   f"batch 128, 100 epochs, lr x0.1 / x0.01 / x0.001 from epochs 55 / 75 / 90 (1-based), "
                   f"--num-steps 40 --step-size 0.01; the last epoch",
        ),
    }

    @classmethod
    def passes(cls, k, hparams):
        """The k steps and a clean forward in eval mode, then f(x), f(x_adv), f(x)."""
        return {"f": k + 3 + 1 / 3}

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            with eval_mode(self.f):
                x_adv = self.pgd("kl", "gaussian", clip_start=False)(self.f, x, y)
            loss = trades_loss(self.f(x), self.f(x_adv), y, self.hparams["beta"], logits_nat_kl=self.f(x))
        self.step(optimizers["f"], loss)
        return {"loss": loss.detach()}
