"""What every method adapter shares: declared hyperparameters, its authors' protocol, one update step.

A method is one class with a single per-step `update` (DomainBed's shape) and a `PROTOCOLS` table:
how its official script trains it on each dataset/architecture (schedule, train attack, checkpoint
selection, augmentation, normalisation). The training core (`cat_bench.train`) runs the protocol;
an adapter says how one batch changes the weights and owns everything else about its method: the
networks besides f it needs, its optimisers and their lr, its state in a checkpoint, its health
checks, its cost for the planner and how the report shows it. Nothing outside `methods/` names a
method; `docs/extending.md` walks through adding one.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from cat_bench import distributed
from cat_bench.attacks import PGD
from cat_bench.distributed import Shard
from cat_bench.lazy import nn, torch
from cat_bench.models import batchnorms


@dataclass(frozen=True)
class Hparam:
    """A hyperparameter's defaults per dataset family and where they come from; its allowed values:
    `choices` for a named option, else the closed range [`low`, `high`] of a number (every weight,
    margin, scale, rate and epoch of the methods here is non-negative)."""

    cifar: Any
    mnist: Any
    source: str
    choices: tuple | None = None
    low: float = 0.0
    high: float = math.inf

    def values(self) -> dict[str, Any]:
        """The default per dataset family."""
        return {"cifar": self.cifar, "mnist": self.mnist}

    def default(self, family: str) -> Any:
        """The default for a dataset family; KeyError for a family it has none for (`resolve_hparams` names it)."""
        return self.values()[family]


SELECTIONS = ("nat+rob", "rob", "final")
AUGMENTATIONS = ("none", "crop-flip-reflect", "crop-flip", "crop-flip-rotate15")


@dataclass(frozen=True)
class Protocol:
    """How one method's official script trains it on one dataset/architecture (its `source`).

    `milestones`: lr is divided by 10 once that many epochs are complete (torch's MultiStepLR);
    with `lr_per_iteration` the lr is set before every batch from t = epoch + (i+1)/n instead
    (Rice et al.'s piecewise schedule). `milestones_follow_epochs`: the script places its drops at
    fractions of its `--epochs` (Rice et al.'s `t / args.epochs < 0.5`), so a run with other epochs
    moves them in proportion; otherwise they stay at the script's fixed epochs. `max_steps` ends training after that many optimiser steps
    (Madry et al.'s 100k). `eps_decimals`: the script writes eps and step as decimals (TRADES'
    0.031 and 0.007 for 8/255), so the train attack uses round(eps, d) and round(step, d).
    `selection`: the epoch kept, "nat+rob" (best natural + robust test accuracy, CAT), "rob" (best
    robust, Rice et al.'s early stopping) or "final". `select_at_train_eps`: the selection attack
    runs at the training eps (Rice et al.) instead of the paper's test eps. `train_skip`: training
    images left out at the start (TensorFlow's MNIST loader keeps the first 5,000 for validation).
    """

    batch_size: int
    epochs: int
    optimizer: str  # "sgd" or "adam"
    lr: float
    milestones: tuple[int, ...]
    attack_steps: int
    selection: str
    source: str
    attack_step: float | None = None  # the script's PGD step, whatever the eps
    attack_step_ratio: float | None = None  # or a step that scales with eps: ratio * eps
    hparams: dict = field(default_factory=dict)  # the script's values of the method's hyperparameters
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_per_iteration: bool = False
    milestones_follow_epochs: bool = False
    max_steps: int | None = None
    eps_decimals: int | None = None
    select_at_train_eps: bool = False
    normalize: bool = True
    augment: str = "none"
    train_skip: int = 0

    def __post_init__(self):
        assert self.selection in SELECTIONS and self.augment in AUGMENTATIONS, self
        assert (self.attack_step is None) != (self.attack_step_ratio is None), self

    def train_attack(self, eps: float, clip: bool) -> dict:
        """The training PGD's eps, step, steps and clip for a run at `eps`."""
        alpha = self.attack_step if self.attack_step is not None else self.attack_step_ratio * eps
        if self.eps_decimals is not None:
            eps, alpha = round(eps, self.eps_decimals), round(alpha, self.eps_decimals)
        return {"eps": eps, "alpha": alpha, "steps": self.attack_steps, "clip": clip}

    def as_dict(self) -> dict:
        return asdict(self)


def lr_at(schedule: dict, epoch: int, batch: int, n_batches: int) -> float:
    """The lr of batch `batch` of epoch `epoch` (both 0-based) under a stored Protocol, as its script sets it."""
    t = epoch + (batch + 1) / n_batches if schedule["lr_per_iteration"] else epoch
    return schedule["lr"] * 0.1 ** sum(t >= m for m in schedule["milestones"])


@dataclass(frozen=True)
class TrainAttack:
    """The training attack's budget from the protocol (docs/method.md s3); methods pick the loss.

    `clip`: iterates (and CAT's calibrated example) stay in [0,1]; False only for CAT on MNIST
    under the paper protocol (docs/method.md s4).
    """

    eps: float
    alpha: float
    steps: int
    clip: bool = True


def make_optimizer(schedule: dict, params) -> torch.optim.Optimizer:
    """SGD or Adam as a stored Protocol says (`resolve_config`'s "schedule")."""
    if schedule["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=schedule["lr"], weight_decay=schedule["weight_decay"])
    return torch.optim.SGD(params, lr=schedule["lr"], momentum=schedule["momentum"],
                           weight_decay=schedule["weight_decay"])


class Method:
    """Base class of the method adapters; subclasses set `name`, `label`, `color`, `HPARAMS`,
    `PROTOCOLS`, `passes` and `update`.

    `PROTOCOLS` maps (dataset, architecture) to the official script's Protocol; "*" as the
    architecture matches any. `DEFAULT_ARCH` is the architecture the script trains per family.
    A method without an entry for a dataset trains with the uniform protocol (CAT's).
    `label` and `color` show the method in the report's figures and fidelity pages; `mask_figure` says
    that the report can draw Figure 2 (the mask) from its runs, with `mask_rows`; `PAPER` (title, authors, venue,
    link) is the paper a RobustBench submission of its runs names by default.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    color: ClassVar[str]
    mask_figure: ClassVar[bool] = False
    PAPER: ClassVar[dict[str, str] | None] = None
    # Health: the history keys `check_health` may set, each with what it watches in words ("mask"): the
    # `done` summary lists the epochs of each (`<key>_epochs`), and results, cards and the report show them.
    HEALTH_FLAGS: ClassVar[dict[str, str]] = {}
    TRACE_KEY: ClassVar[str | None] = None  # a key of `update`'s losses marking a step `trace` records
    TRACE_LABEL: ClassVar[str] = ""  # TRACE_KEY in words, for tables and plots ("mean mask")
    HEALTH_BAND: ClassVar[tuple[float, float] | None] = None  # TRACE_KEY's healthy range, where it has one
    HPARAMS: ClassVar[dict[str, Hparam]] = {}
    PROTOCOLS: ClassVar[dict[tuple[str, str], Protocol]] = {}
    DEFAULT_ARCH: ClassVar[dict[str, str]] = {"mnist": "smallcnn", "cifar": "preact-resnet18"}
    # The network the official script itself builds, per family, where cat-bench trains another one
    # (the paper's) with the script's settings: said in `list methods` and under the report's tables.
    SCRIPT_NETWORK: ClassVar[dict[str, str]] = {}
    clips_on_mnist: ClassVar[bool] = True  # the official MNIST script keeps inputs in [0,1]

    def __init__(self, f: nn.Module, g: nn.Module | None, hparams: dict[str, Any], attack: TrainAttack,
                 autocast: contextlib.AbstractContextManager | None = None):
        self.f = f
        self.g = g
        self.hparams = hparams
        self.attack = attack
        self._autocast = autocast
        self.shard: Shard | None = None  # data-parallel training: this rank's rows of the batch (set by the core)
        self._f_has_bn = bool(batchnorms(f))

    @classmethod
    def build(cls, f: nn.Module, extra: dict[str, nn.Module], hparams: dict[str, Any], attack: TrainAttack,
              autocast: contextlib.AbstractContextManager | None = None) -> Method:
        """The adapter on a run's networks: f and the `extra_networks` built for it."""
        return cls(f, extra.get("g"), hparams, attack, autocast)

    @classmethod
    def mask_rows(cls, extra: dict[str, nn.Module], x: torch.Tensor, x_adv: torch.Tensor,
                  clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Figure 2's mask and calibrated rows for natural `x` and adversarial `x_adv`, from the trained
        `extra_networks` (in eval mode); only methods with `mask_figure` have them."""
        raise NotImplementedError(f"{cls.name} has no mask to draw (mask_figure is False)")

    @classmethod
    def variant_label(cls, hparams: dict[str, Any]) -> str:
        """A run's name in a figure's legend: the method's `label` unless its hparams make it a variant
        the paper names otherwise (CAT's ablations A1, A2 in Figure 4)."""
        return cls.label

    @classmethod
    def extra_networks(cls, family: str, in_channels: int) -> dict[str, nn.Module]:
        """The networks besides f this method trains (CAT's mask net g), built for a dataset family;
        they are saved in the checkpoints beside f."""
        return {}

    @classmethod
    def passes(cls, k: int, hparams: dict[str, Any]) -> dict[str, float]:
        """Forward+backward passes per training image of each network ("f" and the extra ones) when
        the training attack takes `k` steps, a forward alone counting 1/3: the planner's cost
        (cat_bench/costs.py)."""
        raise NotImplementedError(f"{cls.__name__} does not say its cost per image (Method.passes)")

    @classmethod
    def check_health(cls, means: dict[str, float]) -> list[tuple[str, str, str]]:
        """Flags for an epoch from its mean losses: (history key in HEALTH_FLAGS, value, warning).
        The core records each in the epoch's history row and logs its warning."""
        return []

    @classmethod
    def health(cls, value: float | None) -> str | None:
        """The state of one TRACE_KEY value (an epoch's mean or a traced step's): "collapsed" below
        HEALTH_BAND, "saturated" above it, None inside it or without a band."""
        if cls.HEALTH_BAND is None or value is None:
            return None
        low, high = cls.HEALTH_BAND
        return "collapsed" if value < low else "saturated" if value > high else None

    @classmethod
    def health_flags(cls, history: list[dict]) -> list[dict]:
        """A run's health flags from its history rows: one {"flag", "detail"} per flag key and value, with
        the epochs that raised it."""
        epochs: dict[tuple[str, str], list[int]] = {}
        for row in history:
            for key in cls.HEALTH_FLAGS:
                if key in row:
                    epochs.setdefault((key, row[key]), []).append(row["epoch"])
        where = (f"{cls.TRACE_LABEL} outside [{cls.HEALTH_BAND[0]:g}, {cls.HEALTH_BAND[1]:g}]"
                 if cls.HEALTH_BAND is not None else "flagged")
        return [{"flag": f"{cls.HEALTH_FLAGS[key]} {value}", "detail": f"{where} in epoch(s) {', '.join(map(str, e))}"}
                for (key, value), e in epochs.items()]

    @classmethod
    def excursions(cls, trace: list[dict]) -> list[tuple[str, tuple[int, int], tuple[int, int], bool]]:
        """Stretches of trace.jsonl whose TRACE_KEY value left HEALTH_BAND: (`health`'s state, (epoch, batch)
        of the first and of the last row outside, whether a later row came back inside)."""
        out: list[list] = []
        for i, row in enumerate(trace):
            state = cls.health(row.get(cls.TRACE_KEY)) if cls.TRACE_KEY else None
            where = (row["epoch"], row["batch"])
            if state and out and out[-1][0] == state and out[-1][4] == i - 1:
                out[-1][2], out[-1][4] = where, i
            elif state:
                out.append([state, where, where, False, i])
        for ex in out:
            ex[3] = ex[4] + 1 < len(trace)
        return [tuple(ex[:4]) for ex in out]

    @classmethod
    def epoch_means(cls, means: dict[str, float]) -> dict[str, float]:
        """An epoch's means of the per-step values `update` returns, as the history records them."""
        return means

    def trace(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step's values for trace.jsonl (a step whose losses hold TRACE_KEY, every few batches)."""
        raise NotImplementedError(f"{type(self).__name__} sets TRACE_KEY but not trace")

    def configure_optimizers(self, schedule: dict) -> dict[str, torch.optim.Optimizer]:
        """This method's optimisers, one per network of `modules()`, as the protocol says; kept for
        `set_lr` and `state_dict` and returned for `update`."""
        self.optimizers = {k: make_optimizer(schedule, m.parameters()) for k, m in self.modules().items()}
        return self.optimizers

    def set_lr(self, lr: float) -> None:
        """Set the protocol's lr of the coming batch (`lr_at`) on every optimiser the schedule drives."""
        for optimizer in self.optimizers.values():
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the networks' weights that resuming needs (checkpoints/last.pt): the
        optimisers' states, and a method's extra state under keys of its own."""
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        for k, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][k])

    def autocast(self):
        """bf16 autocast when the run's precision is bf16 (set by the core); else a no-op context."""
        return self._autocast if self._autocast is not None else contextlib.nullcontext()

    def modules(self) -> dict[str, nn.Module]:
        """The networks this method trains, each with its own optimiser ("f", and "g" for CAT)."""
        return {"f": self.f}

    def pgd(self, loss: str, random_start: str, rs_scale: float | None = None, kappa: float = 0.0,
            tau: int | None = None, clip_start: bool = True) -> PGD:
        """The training PGD with this run's eps/step/steps/clip and a method's own loss and start."""
        return PGD(eps=self.attack.eps, alpha=self.attack.alpha, steps=self.attack.steps, loss=loss,
                   random_start=random_start, rs_scale=rs_scale, kappa=kappa, tau=tau, clip=self.attack.clip,
                   clip_start=clip_start, shard=self.shard)

    def track_bn(self, x: torch.Tensor) -> None:
        """A gradient-free train-mode forward that only moves f's BatchNorm running statistics.

        The official scripts make such forwards (Rice et al.'s and CAT's restart bookkeeping after
        PGD, their clean forward after the step, TRADES' second clean forward); the running
        statistics, and so every evaluation, depend on them. Skipped for nets without BatchNorm.
        """
        if self._f_has_bn:
            with torch.no_grad():
                self.f(x)

    def update(self, x: torch.Tensor, y: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer],
               epoch: int) -> dict[str, torch.Tensor]:
        """One training step on a batch; returns detached scalar losses (no host sync)."""
        raise NotImplementedError

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backpropagate `loss` and step one optimiser."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.apply(optimizer)

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Step one optimiser on its gradients; in data-parallel training, on the global batch's
        (each rank's gradient times `shard_weight`, summed over ranks)."""
        if self.shard is not None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            distributed.sum_weighted(grads, self.shard_weight())
        optimizer.step()

    @classmethod
    def reduction(cls, hparams: dict[str, Any]) -> str:
        """How the losses this method steps on reduce over the batch: "mean" (every one, the default),
        "sum" (every one) or "mixed" (a data-parallel group cannot share those)."""
        return "mean"

    def shard_weight(self) -> float:
        """This rank's weight in the group's sums of gradients and recorded losses: its share of the
        batch for mean losses, 1 for summed ones."""
        return self.shard.weight if self.reduction(self.hparams) == "mean" else 1.0
