"""Adversarial Weight Perturbation (Wu, Xia, Wang, NeurIPS 2020) as its official code runs it.

csdongxian/AWP: the weight perturbation in AT_AWP/utils_awp.py (AdvWeightPerturb) and
trades_AWP/utils_awp.py (TradesAWP); AT-AWP's step and protocol in AT_AWP/train_cifar10.py,
TRADES-AWP's in trades_AWP/train_trades_cifar.py. One step: craft x_adv as the base method does;
step a proxy copy of f once up the method's loss (the proxy starts from f's weights every step);
move each multi-dimensional weight of f by gamma * ||w|| * d / ||d||, d the proxy's change; take
the base method's optimiser step at the perturbed weights; take the perturbation back off.
The proxy has its own fixed-lr SGD and never touches f's BatchNorm statistics.
"""

from __future__ import annotations

import copy

from cat_bench.attacks import eval_mode
from cat_bench.lazy import F, nn, torch
from cat_bench.methods.base import Hparam, Method, Protocol
from cat_bench.methods.trades import trades_loss

_CODE = "csdongxian/AWP "
EPS = 1e-20  # utils_awp.py: the norm ratio's guard
PAPER = {"title": "Adversarial Weight Perturbation Helps Robust Generalization",
         "authors": "Dongxian Wu, Shu-Tao Xia, Yisen Wang", "venue": "NeurIPS 2020",
         "link": "https://arxiv.org/abs/2004.05884"}


def weight_perturbation(model: nn.Module, proxy: nn.Module) -> dict[str, torch.Tensor]:
    """utils_awp.py diff_in_weights: for each entry of f's state dict with more than one dimension
    and "weight" in its name, ||w|| / (||d|| + 1e-20) * d with d = w_proxy - w (layer-wise scaling)."""
    diff = {}
    proxy_state = proxy.state_dict()
    for name, w in model.state_dict().items():
        if w.dim() <= 1 or "weight" not in name:
            continue
        d = proxy_state[name] - w
        diff[name] = w.norm() / (d.norm() + EPS) * d
    return diff


def add_into_weights(model: nn.Module, diff: dict[str, torch.Tensor], coeff: float) -> None:
    """utils_awp.py add_into_weights: w += coeff * diff[w] for the parameters in `diff`."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in diff:
                p.add_(coeff * diff[name])


class _AWP(Method):
    """What AT-AWP and TRADES-AWP share: the proxy, its optimiser and the perturb/restore around a step.

    `awp_warmup`: epochs trained without the perturbation; `awp_gamma` <= 0 turns it off (the code
    then sets its warm-up to infinity). The proxy is a copy of f (with f's SyncBatchNorm in a
    data-parallel group); its SGD has no momentum and no weight decay, and its lr never follows the
    schedule (`set_lr` leaves it alone). Its one piece of state, the proxy optimiser, goes into the
    checkpoints.
    """

    PAPER = PAPER

    def __init__(self, f, g, hparams, attack, autocast=None):
        super().__init__(f, g, hparams, attack, autocast)
        self.net = getattr(f, "_orig_mod", f)  # f's own module when f runs compiled
        self.proxy = copy.deepcopy(self.net)
        self.proxy_optimizer = torch.optim.SGD(self.proxy.parameters(), lr=hparams["awp_proxy_lr"])

    def proxy_loss(self, proxy: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss the proxy ascends (the base method's, on the proxy)."""
        raise NotImplementedError

    def perturbation(self, x, x_adv, y, epoch: int) -> dict[str, torch.Tensor] | None:
        """calc_awp: the proxy loads f's weights, takes one SGD step on minus its loss in train mode,
        and the scaled difference comes back; None in the warm-up or with gamma <= 0."""
        h = self.hparams
        if h["awp_gamma"] <= 0 or epoch <= h["awp_warmup"]:
            return None
        self.proxy.load_state_dict(self.net.state_dict())
        self.proxy.train()
        with self.autocast():
            loss = -self.proxy_loss(self.proxy, x, x_adv, y)
        self.proxy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.apply(self.proxy_optimizer)
        return weight_perturbation(self.net, self.proxy)

    def perturbed_step(self, optimizer, loss_at_perturbed, diff) -> torch.Tensor:
        """perturb, the base method's loss and optimiser step at the perturbed weights, restore."""
        gamma = self.hparams["awp_gamma"]
        if diff is not None:
            add_into_weights(self.net, diff, gamma)
        loss = loss_at_perturbed()
        self.step(optimizer, loss)
        if diff is not None:
            add_into_weights(self.net, diff, -gamma)
        return loss

    def state_dict(self):
        return {**super().state_dict(), "awp_proxy_optimizer": self.proxy_optimizer.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.proxy_optimizer.load_state_dict(state["awp_proxy_optimizer"])


class ATAWP(_AWP):
    """AT-AWP: PGD adversarial training with AWP (AT_AWP/train_cifar10.py, Rice et al.'s script plus AWP).

    Forwards in the script's order: PGD (train mode, from U(-eps, eps)) and its restart-bookkeeping
    forward; the proxy's step on -CE(proxy(x_adv), y); f(x_adv) at the perturbed weights and the
    CE step; restore; a clean train-mode f(x) (BatchNorm statistics). AT_AWP/train_cifar100.py is
    not adapted: CIFAR-100 and MNIST train with the uniform protocol.
    """

    name = "at-awp"
    label = "AT-AWP"
    color = "#17becf"
    HPARAMS = {
        "awp_gamma": Hparam(0.01, 0.01, "AT_AWP/train_cifar10.py --awp-gamma 0.01 (default)"),
        "awp_warmup": Hparam(0, 0, "AT_AWP/train_cifar10.py --awp-warmup 0 (default): AWP from the first epoch"),
        "awp_proxy_lr": Hparam(0.01, 0.01, "AT_AWP/train_cifar10.py: proxy_opt = SGD(proxy.parameters(), lr=0.01)"),
    }
    PROTOCOLS = {
        ("cifar10", "*"): Protocol(
            batch_size=128, epochs=200, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
            milestones=(100, 150), lr_per_iteration=True, milestones_follow_epochs=True, attack_steps=10,
            attack_step=2 / 255, selection="rob", select_at_train_eps=True, augment="crop-flip-reflect",
            source=f"{_CODE}AT_AWP/train_cifar10.py: PreActResNet18, SGD 0.1 momentum 0.9 wd 5e-4, batch 128, "
                   f"200 epochs, piecewise lr_schedule(epoch + (i+1)/n): /10 at half the epochs, /100 at three "
                   f"quarters; PGD-10 step 2/255 from U(-eps, eps) (train mode); reflect-padded crop + flip "
                   f"(utils.pad); normalised inside; keeps the best robust test accuracy at the training eps "
                   f"(the script's PGD-20, here cat-bench's selection PGD-10)",
        ),
    }

    @classmethod
    def passes(cls, k, hparams):
        """AT's k PGD steps, f(x_adv) and two tracking forwards, plus the proxy's forward and backward."""
        return {"f": k + 2 + 2 / 3}

    def proxy_loss(self, proxy, x, x_adv, y):
        return F.cross_entropy(proxy(x_adv).float(), y)

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            x_adv = self.pgd("ce", "uniform")(self.f, x, y)
            self.track_bn(x_adv)
        diff = self.perturbation(x, x_adv, y, epoch)

        def robust_loss():
            with self.autocast():
                return F.cross_entropy(self.f(x_adv).float(), y)

        loss = self.perturbed_step(optimizers["f"], robust_loss, diff)
        with self.autocast():
            self.track_bn(x)
        return {"loss": loss.detach()}


def _trades_cifar(data: str) -> Protocol:
    return Protocol(
        batch_size=128, epochs=200, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
        milestones=(99, 149), attack_steps=10, attack_step=2 / 255, selection="final", normalize=False,
        augment="crop-flip",
        source=f"{_CODE}trades_AWP/train_trades_cifar.py --data {data}: WideResNet34, SGD 0.1 momentum 0.9 wd "
               f"5e-4, batch 128, 200 epochs, lr x0.1 from epoch 100 and x0.01 from epoch 150 (1-based), "
               f"--epsilon 8 --step-size 2 --num-steps 10 (/255), RandomCrop(32, padding=4) + flip, no "
               f"normalisation; saves every epoch (the last one)",
    )


class TRADESAWP(_AWP):
    """TRADES-AWP: TRADES with AWP (trades_AWP/train_trades_cifar.py, utils_awp.py TradesAWP).

    The attack is TRADES' (eval mode, KL from x + 0.001 N(0,1), unprojected start). The proxy
    ascends CE(proxy(x), y) + beta * KL(p(x) || p(x_adv)) with forwards x, x_adv, x; f then steps on
    the same loss at the perturbed weights with forwards f(x_adv), f(x) (the KL's p(x)), f(x) (the
    CE), the script's order, which decides BatchNorm's running statistics.
    """

    name = "trades-awp"
    label = "TRADES-AWP"
    color = "#e377c2"
    DEFAULT_ARCH = {"mnist": "smallcnn", "cifar": "wrn-34-10"}
    HPARAMS = {
        "beta": Hparam(6.0, 1.0, "train_trades_cifar.py --beta 6.0 (no MNIST script; TRADES' MNIST 1.0)"),
        "awp_gamma": Hparam(0.005, 0.005, "train_trades_cifar.py --awp-gamma 0.005 (default)"),
        "awp_warmup": Hparam(9, 9, "train_trades_cifar.py --awp-warmup 10 on 1-based epochs (`epoch >= "
                                   "args.awp_warmup`): AWP from epoch 10, 9 epochs without"),
        "awp_proxy_lr": Hparam(0.1, 0.1, "train_trades_cifar.py: proxy_optim = SGD(proxy.parameters(), lr=args.lr), "
                                         "--lr 0.1, never scheduled"),
    }
    PROTOCOLS = {("cifar10", "*"): _trades_cifar("CIFAR10"), ("cifar100", "*"): _trades_cifar("CIFAR100")}

    @classmethod
    def passes(cls, k, hparams):
        """TRADES' k steps, a clean eval forward and three forward+backward passes, plus the proxy's three."""
        return {"f": k + 6 + 1 / 3}

    def proxy_loss(self, proxy, x, x_adv, y):
        return trades_loss(proxy(x), proxy(x_adv), y, self.hparams["beta"], logits_nat_kl=proxy(x))

    def update(self, x, y, optimizers, epoch):
        with self.autocast():
            with eval_mode(self.f):
                x_adv = self.pgd("kl", "gaussian", clip_start=False)(self.f, x, y)
        diff = self.perturbation(x, x_adv, y, epoch)

        def loss_at_perturbed():
            with self.autocast():
                logits_adv = self.f(x_adv)
                logits_nat_kl = self.f(x)
                return trades_loss(self.f(x), logits_adv, y, self.hparams["beta"], logits_nat_kl=logits_nat_kl)

        loss = self.perturbed_step(optimizers["f"], loss_at_perturbed, diff)
        return {"loss": loss.detach()}
