"""PGD adversarial training (Madry et al. 2018) as its official scripts run it.

CIFAR: Rice et al. 2020 (locuslab/robust_overfitting train_cifar.py, train_cifar100.py), with
their early stopping. MNIST: Madry et al.'s MadryLab/mnist_challenge (train.py, config.json,
model.py), the model and protocol of the original MNIST result.
"""

from __future__ import annotations

from cat_bench.lazy import F
from cat_bench.methods.base import Hparam, Method, Protocol

_RICE = "locuslab/robust_overfitting "


def _rice(script: str, augment: str, note: str) -> Protocol:
    return Protocol(
        batch_size=128, epochs=200, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
        milestones=(100, 150), lr_per_iteration=True, milestones_follow_epochs=True, attack_steps=10,
        attack_step=2 / 255,
        selection="rob", select_at_train_eps=True, augment=augment,
        source=f"{_RICE}{script}: SGD 0.1 momentum 0.9 wd 5e-4, batch 128, 200 epochs, piecewise "
               f"lr_schedule(epoch + (i+1)/n): /10 at half the epochs (100), /100 at three quarters (150); PGD-10 step 2/255 from U(-eps, eps) "
               f"(train mode); {note}; keeps the best PGD-10 robust test accuracy (at the training eps)",
    )


class AT(Method):
    """PGD adversarial training: CE on PGD examples (Madry et al. 2018; Rice et al. 2020).

    The attack ascends CE from a uniform random start with the model in train mode. Forwards run
    in train_cifar.py's order (PGD, its restart-bookkeeping forward, f(x_adv), and a clean f(x)
    after the step), which decides BatchNorm's running statistics.
    """

    name = "at"
    label = "AT"
    color = "#1f77b4"
    DEFAULT_ARCH = {"mnist": "madry-cnn", "cifar": "preact-resnet18"}
    HPARAMS = {
        "random_start": Hparam("uniform", "uniform", "train_cifar.py: delta.uniform_(-eps, eps); "
                               "mnist_challenge config.json random_start true", choices=("none", "uniform")),
        "loss_reduction": Hparam("mean", "sum", "train_cifar.py: nn.CrossEntropyLoss() (mean); mnist_challenge "
                                 "model.py: xent = tf.reduce_sum", choices=("mean", "sum")),
    }
    PROTOCOLS = {
        ("cifar10", "*"): _rice("train_cifar.py", "crop-flip-reflect", "reflect-padded crop + flip (utils.pad)"),
        ("cifar100", "*"): _rice("train_cifar100.py", "crop-flip-rotate15",
                                 "RandomCrop(32, padding=4) + flip + RandomRotation(15); the script saves every "
                                 "epoch, early stopping picks as train_cifar.py does"),
        ("mnist", "*"): Protocol(
            batch_size=50, epochs=91, max_steps=100_000, optimizer="adam", lr=1e-4, momentum=0.0,
            milestones=(), attack_steps=40, attack_step=0.01, selection="final", normalize=False,
            train_skip=5000,
            source="MadryLab/mnist_challenge train.py + config.json: Adam 1e-4, batch 50, 100,000 steps "
                   "(91 epochs of the 55,000 digits TensorFlow's loader trains on: it keeps the first 5,000 "
                   "for validation), PGD-40 of step 0.01 from U(-eps, eps), summed xent; the last checkpoint",
        ),
    }

    @classmethod
    def reduction(cls, hparams):
        return hparams["loss_reduction"]  # "sum" on MNIST (mnist_challenge)

    @classmethod
    def passes(cls, k, hparams):
        """The k PGD steps, f(x_adv), two BatchNorm-tracking forwards."""
        return {"f": k + 1 + 2 / 3}

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            x_adv = self.pgd("ce", self.hparams["random_start"])(self.f, x, y)
            self.track_bn(x_adv)
            loss = F.cross_entropy(self.f(x_adv).float(), y, reduction=self.hparams["loss_reduction"])
        self.step(optimizers["f"], loss)
        with self.autocast():
            self.track_bn(x)
        return {"loss": loss.detach()}
