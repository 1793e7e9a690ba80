"""The paper's evaluation constants, declared once, each with its source.

Checkpoint selection's attack is docs/method.md section 3 ("Checkpoint selection", Appendix C),
the pixel-domain protocols section 4; `AttackPreset` is the settings of one attack, and the evaluation
attacks' presets are in the registry of cat_bench.eval_attacks. Each method's training
protocol (schedule, train attack, selection rule) and hyperparameters live with its adapter in
`cat_bench.methods`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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


@dataclass(frozen=True)
class Family:
    """A dataset family (DatasetInfo.family): what its datasets share. Its selection attack is `SELECTION`'s
    entry, its evaluation presets the registry's (cat_bench.eval_attacks), its hyperparameter defaults
    each method's `Hparam`s; a family without one of them is refused by name where it is needed."""

    name: str
    label: str
    paper_clips: bool  # under --protocol paper, selection and evaluation keep x + delta in [0,1]
    evaluation_note: str  # how every method is selected and evaluated, for `list methods` and the tables


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("mnist", "MNIST", paper_clips=False,
           evaluation_note="every method selected and evaluated as Train_MNIST.py tests: no [0,1] clip under "
                           "--protocol paper (one harness for all rows of Table 1; the baselines train with their "
                           "scripts' clip), clipped under --protocol valid"),
    Family("cifar", "CIFAR", paper_clips=True,
           evaluation_note="every method selected and evaluated with x + delta clipped to [0,1], as every CIFAR "
                           "script does"),
)}
EVALUATION_NOTE = {name: f.evaluation_note for name, f in FAMILIES.items()}


def get_family(name: str) -> Family:
    """The family record `name`; UsageError naming the known ones."""
    if name not in FAMILIES:
        raise UsageError(f"unknown dataset family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def clips(family: str, protocol: str) -> bool:
    """Whether selection and evaluation attacks keep x + delta in [0,1] under `protocol`.

    One harness for every row of a table: under "paper", every MNIST run, the baselines' too, is
    selected and evaluated as CAT's Train_MNIST.py tests (no clip), since the paper's Table 1 puts
    all rows under its own test code; the baselines still train with their scripts' clip
    (`Method.clips_on_mnist`). CIFAR is clipped everywhere, as every CIFAR script does: each family
    says (`Family.paper_clips`).
    """
    return protocol == "valid" or get_family(family).paper_clips


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

    @classmethod
    def stored(cls, record: dict) -> AttackPreset:
        """The preset a config or eval.json records (`as_dict`'s keys; others, such as its clip, ignored)."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})

    def pgd(self, clip: bool):
        """The attack these settings describe: a `cat_bench.attacks.PGD` for kind "pgd", None for "natural"
        (pyautoattack's kinds run through `evaluate.measure`); iterates kept in [0,1] when `clip`."""
        if self.kind == "natural":
            return None
        if self.kind != "pgd":
            raise ValueError(f"an attack of kind {self.kind!r} is not a PGD")
        from cat_bench.attacks import PGD

        return PGD(eps=self.eps, alpha=self.alpha, steps=self.steps, loss=self.loss, random_start=self.random_start,
                   kappa=self.kappa, clip=clip)


# The attack of per-epoch checkpoint selection (docs/method.md s3, Appendix C); the rule (natural +
# robust, robust, final) is the method's protocol.
SELECTION: dict[str, AttackPreset] = {
    "cifar": AttackPreset("pgd", steps=10, alpha=2 / 255, random_start="uniform", eps=8 / 255,
                          source="docs/method.md s3: PGD-10, random start, eps 8/255, step 2/255"),
    "mnist": AttackPreset("pgd", steps=20, alpha=0.015, eps=0.3,
                          source="docs/method.md s3: PGD-20, eps 0.3, step 0.015, no random start"),
}


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
