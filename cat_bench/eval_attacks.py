"""The evaluation attacks, one registry (docs/method.md s4): each attack is one `EvalAttack` entry.

An entry carries what every reader needs: its name (eval.json's key, `--attacks`), its label in
tables, its place in the paper's column order (the registry's order), whether it is white-box and
multi-step (the gradient-masking flags read these), whether it is a column of the paper's tables,
and its settings per dataset family (`AttackPreset`, with its source). `cat-bench eval`, `results`,
the report, `doctor`, `list attacks` and the suite files all read the registry; adding an attack is
one entry here (a new kind of attack is one branch of `evaluate.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cat_bench.errors import UsageError
from cat_bench.presets import AttackPreset

# pyautoattack's sub-attacks: its standard version (RobustBench's ranking), and its rand version for a
# stochastic forward (an expectation over 20 draws per step).
AUTOATTACK_STANDARD = ["apgd-ce", "apgd-t", "fab-t", "square"]  # lists, as eval.json stores and compares them
AUTOATTACK_RAND = ["apgd-ce", "apgd-dlr"]


@dataclass(frozen=True)
class EvalAttack:
    """One evaluation attack: its names and roles, and its preset per dataset family."""

    name: str
    label: str
    presets: dict[str, AttackPreset] = field(hash=False)
    white_box: bool = True  # uses the model's gradients (FGSM, PGD, CW, AutoAttack)
    multi_step: bool = False  # an iterative white-box attack that should be at least FGSM's strength
    in_paper: bool = True  # a column of the paper's tables (before their Avg); AutoAttack is not


_SQUARE = AttackPreset("square", steps=5000, source="pyautoattack Square, 5000 queries, p_init 0.8 (AutoAttack standard)")
_AUTOATTACK = AttackPreset("autoattack", source="pyautoattack version='standard' (RobustBench's ranking)")
_NATURAL = AttackPreset("natural", source="clean test accuracy")

ATTACKS: dict[str, EvalAttack] = {a.name: a for a in (
    EvalAttack("natural", "Natural", {"cifar": _NATURAL, "mnist": _NATURAL}, white_box=False),
    EvalAttack("fgsm", "FGSM", {
        "cifar": AttackPreset("pgd", steps=1, alpha=None, source="docs/method.md s4: one step of size eps, no random start"),
        "mnist": AttackPreset("pgd", steps=1, alpha=None, source="docs/method.md s4: one step of size eps (inferred for MNIST)"),
    }),
    EvalAttack("pgd20", "PGD-20", {
        "cifar": AttackPreset("pgd", steps=20, alpha=0.003, source="docs/method.md s4: CE, step 0.003, no random start"),
        "mnist": AttackPreset("pgd", steps=20, alpha=0.015,
                              source="docs/method.md s4 (MNIST test code): CE, step 0.015, no random start"),
    }, multi_step=True),
    EvalAttack("pgd100", "PGD-100", {
        "cifar": AttackPreset("pgd", steps=100, alpha=0.003, source="docs/method.md s4: CE, step 0.003, no random start"),
        "mnist": AttackPreset("pgd", steps=100, alpha=0.015,
                              source="docs/method.md s4 (MNIST test code): CE, step 0.015, no random start"),
    }, multi_step=True),
    EvalAttack("cw", "CW∞", {
        "cifar": AttackPreset("pgd", steps=30, alpha=0.003, loss="cw", random_start="uniform", kappa=50.0, eps=0.031,
                              source="docs/method.md s4: 30 steps on the CW margin, kappa 50, eps 0.031, random start"),
        "mnist": AttackPreset("pgd", steps=30, alpha=0.015, loss="cw", random_start="uniform", kappa=150.0,
                              source="inferred: CIFAR's CW-inf protocol with MNIST's step 0.015 and kappa 150 "
                                     "(docs/method.md s1)"),
    }, multi_step=True),
    EvalAttack("square", "Square", {"cifar": _SQUARE, "mnist": _SQUARE}, white_box=False),
    EvalAttack("autoattack", "AutoAttack", {"cifar": _AUTOATTACK, "mnist": _AUTOATTACK}, in_paper=False),
)}


def attacks_for(family: str) -> dict[str, AttackPreset]:
    """The evaluation presets of a dataset family, in the registry's order."""
    return {name: a.presets[family] for name, a in ATTACKS.items() if family in a.presets}


def attack_order() -> list[str]:
    """Every attack's name in the paper's column order (the registry's)."""
    return list(ATTACKS)


def label(name: str) -> str:
    """An attack's label in tables ("PGD-20"); an unknown name as it is."""
    return ATTACKS[name].label if name in ATTACKS else name


def white_box() -> list[str]:
    return [name for name, a in ATTACKS.items() if a.white_box]


def multi_step() -> list[str]:
    return [name for name, a in ATTACKS.items() if a.multi_step]


def paper_columns() -> list[str]:
    """The attacks that are columns of the paper's tables, in order."""
    return [name for name, a in ATTACKS.items() if a.in_paper]


def eval_attack(family: str, name: str, test_eps: float, override: bool = False) -> AttackPreset:
    """The evaluation preset `name` for a dataset family, with eps and FGSM's step resolved.

    A preset's own eps (CW's 0.031) holds unless the user overrides the test eps (`override`).
    """
    presets = attacks_for(family)
    if name not in presets:
        raise UsageError(f"unknown attack {name!r}; allowed: {', '.join(presets)}")
    p = presets[name]
    eps = p.eps if p.eps is not None and not override else test_eps
    alpha = eps if p.alpha is None else p.alpha
    return AttackPreset(p.kind, p.steps, alpha, p.loss, p.random_start, p.kappa, eps, p.source)
