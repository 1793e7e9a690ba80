"""The paper's evaluation constants, declared once, each with its source.

Checkpoint selection's attack is docs/method.md section 3 ("Checkpoint selection", Appendix C),
evaluation attacks are section 4, the pixel-domain protocols section 4. Each method's training
protocol (schedule, train attack, selection rule) and hyperparameters live with its adapter in
`cat_bench.methods`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from cat_bench.errors import UsageError


# Pixel-domain protocols (docs/method.md s4). "paper": what each official script does (CAT's MNIST code
# never clips x + delta or x + M * delta to [0,1], in training, selection or test; every CIFAR
# script and every baseline's MNIST script clips); "valid": inputs always in [0,1] (RobustBench).
PIXEL_PROTOCOLS = ("paper", "valid")


# Training schedules: "official", each method's own authors' protocol (the default); "uniform": CAT's
# protocol for every method, for controlled comparisons (the methods keep their own losses and attacks).
SCHEDULES = ("official", "uniform")

# Numeric precision of training (part of a run's identity). "fp32": what every official script
# does (CAT's Train_CIFAR10.py comments apex out; it and Rice et al.'s train_cifar.py declare
# --half but never read it, and their Batches yield .float(); TRADES, MART and FAT have no half
# precision; mnist_challenge is TensorFlow float32), with TF32 math off (it does not exist
# before Ampere GPUs; torch lets cuDNN use it by default); "tf32": fp32 weights with TF32 matmuls
# and convolutions (CUDA, Ampere and later); "bf16": bf16 autocast of every training forward.
# tf32 and bf16 are speed options whose effect is measured only on a GPU. Evaluation runs in fp32.
PRECISIONS = ("fp32", "tf32", "bf16")

# torch.compile modes for f (`--compile MODE`, a speed option outside the run's identity):
# "default" (inductor kernels), "reduce-overhead" (the same, replayed as CUDA graphs: the launch-bound
# steps of small networks such as SmallCNN at batch 100 stop waiting on kernel launches),
# "max-autotune" (also searches GEMM/convolution configurations and uses CUDA graphs).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def clips(family: str, protocol: str) -> bool:
    """Whether selection and evaluation attacks keep x + delta in [0,1] under `protocol`.

    One harness for every row of a table: under "paper", every MNIST run, the baselines' too, is
    selected and evaluated as CAT's Train_MNIST.py tests (no clip), since the paper's Table 1 puts
    all rows under its own test code; the baselines still train with their scripts' clip
    (`Method.clips_on_mnist`). CIFAR is clipped everywhere, as every CIFAR script does.
    """
    return family == "cifar" or protocol == "valid"


EVALUATION_NOTE = {
    "mnist": "every method selected and evaluated as Train_MNIST.py tests: no [0,1] clip under --protocol "
             "paper (one harness for all rows of Table 1; the baselines train with their scripts' clip), "
             "clipped under --protocol valid",
    "cifar": "every method selected and evaluated with x + delta clipped to [0,1], as every CIFAR script does",
}


@dataclass(frozen=True)
class AttackPreset:
    """Settings of one evaluation attack (docs/method.md s4). `eps=None` means the dataset's test eps."""

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


# Evaluation presets by dataset family (docs/method.md s4).
EVAL_ATTACKS: dict[str, dict[str, AttackPreset]] = {
    "cifar": {
        "natural": AttackPreset("natural", source="clean test accuracy"),
        "fgsm": AttackPreset("pgd", steps=1, alpha=None, source="docs/method.md s4: one step of size eps, no random start"),
        "pgd20": AttackPreset("pgd", steps=20, alpha=0.003, source="docs/method.md s4: CE, step 0.003, no random start"),
        "pgd100": AttackPreset("pgd", steps=100, alpha=0.003, source="docs/method.md s4: CE, step 0.003, no random start"),
        "cw": AttackPreset("pgd", steps=30, alpha=0.003, loss="cw", random_start="uniform", kappa=50.0,
                           eps=0.031, source="docs/method.md s4: 30 steps on the CW margin, kappa 50, eps 0.031, random start"),
        "square": AttackPreset("square", steps=5000, source="pyautoattack Square, 5000 queries, p_init 0.8 (AutoAttack standard)"),
        "autoattack": AttackPreset("autoattack", source="pyautoattack version='standard' (RobustBench's ranking)"),
    },
    "mnist": {
        "natural": AttackPreset("natural", source="clean test accuracy"),
        "fgsm": AttackPreset("pgd", steps=1, alpha=None, source="docs/method.md s4: one step of size eps (inferred for MNIST)"),
        "pgd20": AttackPreset("pgd", steps=20, alpha=0.015, source="docs/method.md s4 (MNIST test code): CE, step 0.015, no random start"),
        "pgd100": AttackPreset("pgd", steps=100, alpha=0.015, source="docs/method.md s4 (MNIST test code): CE, step 0.015, no random start"),
        "cw": AttackPreset("pgd", steps=30, alpha=0.015, loss="cw", random_start="uniform", kappa=150.0,
                           source="inferred: CIFAR's CW-inf protocol with MNIST's step 0.015 and kappa 150 (docs/method.md s1)"),
        "square": AttackPreset("square", steps=5000, source="pyautoattack Square, 5000 queries, p_init 0.8 (AutoAttack standard)"),
        "autoattack": AttackPreset("autoattack", source="pyautoattack version='standard' (RobustBench's ranking)"),
    },
}

# The attack of per-epoch checkpoint selection (docs/method.md s3, Appendix C); the rule (natural +
# robust, robust, final) is the method's protocol.
SELECTION: dict[str, AttackPreset] = {
    "cifar": AttackPreset("pgd", steps=10, alpha=2 / 255, random_start="uniform", eps=8 / 255,
                          source="docs/method.md s3: PGD-10, random start, eps 8/255, step 2/255"),
    "mnist": AttackPreset("pgd", steps=20, alpha=0.015, eps=0.3,
                          source="docs/method.md s3: PGD-20, eps 0.3, step 0.015, no random start"),
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


def format_eps(eps: float) -> str:
    """A training eps as people write it: 0.3, 8/255."""
    text = f"{eps:g}"
    if abs(float(text) - eps) < 1e-12 and len(text) <= 6:
        return text
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.6g}"


def format_value(v) -> str:
    """A hyperparameter value for an `--only` filter or a label: 5.0 -> 5, 0.05 -> 0.05."""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
