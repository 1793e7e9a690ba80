"""The paper's protocol constants, declared once, each with its source.

Training schedules are METHOD.md section 3, checkpoint selection is section 3 ("Checkpoint
selection", Appendix C), evaluation attacks are section 4. Method hyperparameters (beta, b,
kappa, ...) live with each method adapter in `cat_bench.methods`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from cat_bench.errors import UsageError


@dataclass(frozen=True)
class Schedule:
    """Optimiser, learning-rate schedule and training attack of one dataset/architecture."""

    batch_size: int
    epochs: int
    optimizer: str  # "sgd" or "adam"
    lr: float
    milestones: tuple[int, ...]  # epochs (1-based, as in the paper) where lr is divided by 10
    momentum: float
    weight_decay: float
    attack_steps: int
    attack_step_ratio: float  # PGD step size = ratio * eps (CIFAR: 2/255 for 8/255; MNIST: eps/20)
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


_CIFAR10_SGD = dict(
    batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
    attack_steps=10, attack_step_ratio=0.25,
)

SCHEDULES: dict[tuple[str, str], Schedule] = {
    ("mnist", "smallcnn"): Schedule(
        batch_size=100, epochs=40, optimizer="adam", lr=1e-3, milestones=(30,), momentum=0.0,
        weight_decay=0.0, attack_steps=20, attack_step_ratio=1 / 20,
        source="METHOD.md s3 (MNIST): Adam 1e-3 for f and g, /10 at 30, 40 epochs, 20 steps of eps/20 (code)",
    ),
    ("cifar10", "preact-resnet18"): Schedule(
        epochs=140, milestones=(100, 120), **_CIFAR10_SGD,
        source="METHOD.md s3 (CIFAR-10, PreAct ResNet-18): SGD 0.1, /10 at 100, /100 at 120, 140 epochs",
    ),
    ("cifar10", "wrn-34-10"): Schedule(
        epochs=140, milestones=(100, 110), **_CIFAR10_SGD,
        source="METHOD.md s3 (CIFAR-10, WRN-34-10): /10 at 100, /100 at 110 (code); 140 epochs (paper App. D)",
    ),
    ("cifar100", "preact-resnet18"): Schedule(
        epochs=120, milestones=(100, 110), **_CIFAR10_SGD,
        source="METHOD.md s3 (CIFAR-100): 120 epochs, /10 at 100 and 110",
    ),
}

DEFAULT_ARCH = {"mnist": "smallcnn", "cifar": "preact-resnet18"}


def schedule_for(family: str, dataset: str, arch: str) -> Schedule:
    """The paper's schedule for a dataset/architecture (METHOD.md s3).

    mnist-mini uses MNIST's schedule. A CIFAR architecture without its own entry (e.g. a small
    WRN for tests) takes its dataset's PreAct ResNet-18 schedule.
    """
    base = "mnist" if family == "mnist" else dataset
    if (base, arch) in SCHEDULES:
        return SCHEDULES[(base, arch)]
    fallback = (base, DEFAULT_ARCH[family])
    if fallback not in SCHEDULES:
        raise UsageError(f"no schedule for dataset {dataset!r} with architecture {arch!r}; "
                         f"known: {sorted(SCHEDULES)}")
    return SCHEDULES[fallback]


@dataclass(frozen=True)
class AttackPreset:
    """Settings of one evaluation attack (METHOD.md s4). `eps=None` means the dataset's test eps."""

    kind: str  # "natural", "pgd", "square", "autoattack"
    steps: int = 0
    alpha: float | None = 0.0  # step size; None means "= eps" (FGSM)
    loss: str = "ce"
    random_start: str = "none"
    kappa: float = 0.0
    eps: float | None = None
    source: str = ""

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}


# Evaluation presets by dataset family (METHOD.md s4).
EVAL_ATTACKS: dict[str, dict[str, AttackPreset]] = {
    "cifar": {
        "natural": AttackPreset("natural", source="clean test accuracy"),
        "fgsm": AttackPreset("pgd", steps=1, alpha=None, source="METHOD.md s4: one step of size eps, no random start"),
        "pgd20": AttackPreset("pgd", steps=20, alpha=0.003, source="METHOD.md s4: CE, step 0.003, no random start"),
        "pgd100": AttackPreset("pgd", steps=100, alpha=0.003, source="METHOD.md s4: CE, step 0.003, no random start"),
        "cw": AttackPreset("pgd", steps=30, alpha=0.003, loss="cw", random_start="uniform", kappa=50.0,
                           eps=0.031, source="METHOD.md s4: 30 steps on the CW margin, kappa 50, eps 0.031, random start"),
        "square": AttackPreset("square", steps=5000, source="pyautoattack Square, 5000 queries, p_init 0.8 (AutoAttack standard)"),
        "autoattack": AttackPreset("autoattack", source="pyautoattack version='standard' (RobustBench's ranking)"),
    },
    "mnist": {
        "natural": AttackPreset("natural", source="clean test accuracy"),
        "fgsm": AttackPreset("pgd", steps=1, alpha=None, source="METHOD.md s4: one step of size eps (inferred for MNIST)"),
        "pgd20": AttackPreset("pgd", steps=20, alpha=0.015, source="METHOD.md s4 (MNIST test code): CE, step 0.015, no random start"),
        "pgd100": AttackPreset("pgd", steps=100, alpha=0.015, source="METHOD.md s4 (MNIST test code): CE, step 0.015, no random start"),
        "cw": AttackPreset("pgd", steps=30, alpha=0.015, loss="cw", random_start="uniform", kappa=150.0,
                           source="inferred: CIFAR's CW-inf protocol with MNIST's step 0.015 and kappa 150 (METHOD.md s1)"),
        "square": AttackPreset("square", steps=5000, source="pyautoattack Square, 5000 queries, p_init 0.8 (AutoAttack standard)"),
        "autoattack": AttackPreset("autoattack", source="pyautoattack version='standard' (RobustBench's ranking)"),
    },
}

# Per-epoch checkpoint selection (METHOD.md s3, Appendix C): natural + robust accuracy.
SELECTION: dict[str, AttackPreset] = {
    "cifar": AttackPreset("pgd", steps=10, alpha=2 / 255, random_start="uniform", eps=8 / 255,
                          source="METHOD.md s3: PGD-10, random start, eps 8/255, step 2/255"),
    "mnist": AttackPreset("pgd", steps=20, alpha=0.015, eps=0.3,
                          source="METHOD.md s3: PGD-20, eps 0.3, step 0.015, no random start"),
}


def eval_attack(family: str, name: str, test_eps: float, override: bool = False) -> AttackPreset:
    """The evaluation preset `name` for a dataset family, with eps and FGSM's step resolved.

    A preset's own eps (CW's 0.031) holds unless the user overrides the test eps (`override`).
    """
    presets = EVAL_ATTACKS[family]
    if name not in presets:
        raise UsageError(f"unknown attack {name!r}; allowed: {', '.join(presets)}")
    p = presets[name]
    eps = p.eps if p.eps is not None and not override else test_eps
    alpha = eps if p.alpha is None else p.alpha
    return AttackPreset(p.kind, p.steps, alpha, p.loss, p.random_start, p.kappa, eps, p.source)


def parse_eps(text: str) -> float:
    """An eps given as a number (0.3) or a fraction (8/255)."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"eps {text!r} is not a number; give e.g. 0.3 or 8/255") from None
