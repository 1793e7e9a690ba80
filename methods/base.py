"""What every method adapter shares: declared hyperparameters, the train attack, one update step.

A method is one class with a single per-step `update` (DomainBed's shape). The training core
(`cat_bench.train`) owns data, optimisers, schedules, checkpoints and selection; an adapter only
says how one batch changes the weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cat_bench.attacks import PGD


@dataclass(frozen=True)
class Hparam:
    """A hyperparameter's defaults per dataset family and where they come from."""

    cifar: Any
    mnist: Any
    source: str
    choices: tuple | None = None

    def default(self, family: str) -> Any:
        return self.cifar if family == "cifar" else self.mnist


@dataclass(frozen=True)
class TrainAttack:
    """The training attack's budget from the schedule preset (METHOD.md s3); methods pick the loss."""

    eps: float
    alpha: float
    steps: int


class Method:
    """Base class of the method adapters; subclasses set `name`, `HPARAMS` and `update`."""

    name: ClassVar[str]
    HPARAMS: ClassVar[dict[str, Hparam]] = {}
    uses_mask_net: ClassVar[bool] = False

    def __init__(self, f: nn.Module, g: nn.Module | None, hparams: dict[str, Any], attack: TrainAttack,
                 autocast: contextlib.AbstractContextManager | None = None):
        self.f = f
        self.g = g
        self.hparams = hparams
        self.attack = attack
        self._autocast = autocast

    def autocast(self):
        """bf16 autocast on CUDA (set by the core); a no-op context on CPU."""
        return self._autocast if self._autocast is not None else contextlib.nullcontext()

    def modules(self) -> dict[str, nn.Module]:
        """The networks this method trains, each with its own optimiser ("f", and "g" for CAT)."""
        return {"f": self.f}

    def pgd(self, loss: str, random_start: str, rs_scale: float | None = None, kappa: float = 0.0,
            tau: int | None = None) -> PGD:
        """The training PGD with this run's eps/step/steps and a method's own loss and start."""
        return PGD(eps=self.attack.eps, alpha=self.attack.alpha, steps=self.attack.steps, loss=loss,
                   random_start=random_start, rs_scale=rs_scale, kappa=kappa, tau=tau)

    def update(self, x: torch.Tensor, y: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer],
               epoch: int) -> dict[str, torch.Tensor]:
        """One training step on a batch; returns detached scalar losses (no host sync)."""
        raise NotImplementedError

    @staticmethod
    def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backpropagate `loss` and step one optimiser."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
