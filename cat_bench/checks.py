"""Checks of an evaluation's setup, run on the model as it will be attacked, before any attack.

The setup errors that make a model look robust in the issue trackers of AutoAttack, RobustBench,
TRADES and torchattacks, each tested on the first few test examples:

    eval-mode          the logits of an example depend neither on the batch it is in nor on the
                       batch size (BatchNorm left in train mode, or using batch statistics); for a
                       stochastic forward, on logits averaged over several forwards
    eps-zero           PGD at eps = 0 gives the clean predictions (the attack path itself changes
                       nothing: no hidden preprocessing, clipping or dtype change)
    input-range        the model takes [0, 1] pixels: none of the other usual conventions (mean/std
                       normalised, [0, 255], [-1, 1]) gives it clearly higher clean accuracy
                       (`wrong_range`); a model whose normalisation was left outside fails this
    deterministic      two forwards of the same input agree; a stochastic forward (dropout,
                       randomised defences) is attacked with AutoAttack's `rand` version (EOT over
                       20 draws, APGD-CE and APGD-DLR) and the check says so ("handled")
    finite-gradients   the input gradient of the cross-entropy is finite everywhere

Each check is {"check", "status": "passed" | "failed" | "handled" | "not run", "detail"}: a check
that could not run says so and why, never "passed". Every check that did not pass is a flag shown
beside the gradient-masking flags (results, report, leaderboard) and a failed one a warning;
`cat-bench eval --strict` makes a failure an error. The checks leave the model's parameters, buffers (BatchNorm running statistics) and
train/eval mode as they found them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cat_bench.eval_attacks import AUTOATTACK_RAND
from cat_bench.lazy import F, nn, torch

CHECKS = ("eval-mode", "eps-zero", "input-range", "deterministic", "finite-gradients")
STATUSES = ("passed", "failed", "handled", "not run")
N_CHECK = 100  # examples the checks look at
REL_TOL = 1e-3  # logits agreeing to this (relative to their scale) are "the same"
DRAWS = 16  # forwards averaged per batch when the forward is stochastic
NOISE_FACTOR = 2.0  # a stochastic model's mean batch effect must exceed its draws' own this many times to fail
RANGE_MARGIN = 0.10  # another input convention beating [0, 1] by this much clean accuracy fails the check
MIN_GAP = 0.03  # ... or by this much and at least half of [0, 1]'s error (below: 3 of the 100 examples, noise)
ABOVE_CHANCE = 0.20  # ... and only when that convention is this far above chance (no alarm on chance-level data)
# The usual per-channel statistics for a normalisation left outside the model (torchvision's examples,
# the MNIST and CIFAR repositories); a dataset with its own statistics (dataset_info.mean) uses those.
USUAL_STATS = {"mnist": ((0.1307,), (0.3081,)),
               "cifar": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))}


def _check(name: str, status: str, detail: str) -> dict:
    return {"check": name, "status": status, "detail": detail}


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Restore the model's state dict (BatchNorm running statistics move in train mode) and mode after the block."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
        for m, mode in modes:
            m.training = mode


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).float()


def _same(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, float]:
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    return diff <= REL_TOL * max(1.0, a.abs().max().item()), diff


def eval_mode(model: nn.Module, x: torch.Tensor, stochastic: bool) -> dict:
    """The first quarter of `x`'s logits: in a batch of half `x`, in a batch half that size, and beside other
    examples. A stochastic forward (dropout left on, a randomised defence) is compared on logits averaged
    over DRAWS forwards (`_eval_mode_averaged`)."""
    h = len(x) // 4
    if h < 2:
        return _check("eval-mode", "not run", f"{len(x)} examples are too few (at least 8)")
    if stochastic:
        return _eval_mode_averaged(model, x[:2 * h], h)
    ref = _logits(model, x[:2 * h])[:h]
    smaller, d1 = _same(ref, _logits(model, x[:h]))
    others, d2 = _same(ref, _logits(model, torch.cat([x[:h], x[2 * h:3 * h]]))[:h])
    if smaller and others:
        return _check("eval-mode", "passed", f"logits of {h} examples agree across batch size and companions "
                                             f"(max diff {max(d1, d2):.2g})")
    return _check("eval-mode", "failed", f"logits depend on the batch (max diff {d1:.3g} at half the batch size, "
                                         f"{d2:.3g} beside other examples): the model is in train mode or uses "
                                         f"batch statistics; call model.eval() before evaluating")


def _mean_logits(model: nn.Module, batch: torch.Tensor, n: int) -> torch.Tensor:
    return torch.stack([_logits(model, batch)[:n] for _ in range(DRAWS)]).mean(0)


def _eval_mode_averaged(model: nn.Module, batch: torch.Tensor, h: int) -> dict:
    """Batch dependence under a stochastic forward: the first `h` examples' logits averaged over DRAWS
    forwards beside their usual companions, again (the draws' own spread), and beside black images
    (which move batch statistics far). Failed when the companions move the averages more than
    NOISE_FACTOR times the draws' own spread does (mean absolute differences: a mean over every
    logit, so the comparison is not at the mercy of one extreme draw)."""
    ref = _mean_logits(model, batch, h)
    spread = (ref - _mean_logits(model, batch, h)).abs().mean().item()
    moved = (ref - _mean_logits(model, torch.cat([batch[:h], torch.zeros_like(batch[h:])]), h)).abs().mean().item()
    detail = (f"stochastic forward, logits of {h} examples averaged over {DRAWS} forwards: black companions move "
              f"them by {moved:.3g} on average, a second set of draws by {spread:.3g}")
    if moved > NOISE_FACTOR * spread + REL_TOL * max(1.0, ref.abs().max().item()):
        return _check("eval-mode", "failed", f"{detail}: the logits depend on the batch (train-mode BatchNorm or "
                                             f"batch statistics, with dropout or noise); call model.eval() before "
                                             f"evaluating, or export the model in eval mode")
    return _check("eval-mode", "passed", detail)


def eps_zero(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: bool, stochastic: bool) -> dict:
    """PGD with eps = 0 against clean predictions: the same examples correct (the same accuracy for a stochastic model)."""
    from cat_bench.attacks import PGD

    clean = _logits(model, x).argmax(1) == y
    x0 = PGD(eps=0.0, alpha=0.0, steps=1, clip=clip)(model, x, y)
    attacked = _logits(model, x0).argmax(1) == y
    a, b = clean.float().mean().item(), attacked.float().mean().item()
    same = abs(a - b) <= RANGE_MARGIN if stochastic else bool(torch.equal(clean, attacked))
    detail = f"clean {100 * a:.2f}%, PGD at eps 0 {100 * b:.2f}% on {len(y)} examples"
    if same:
        return _check("eps-zero", "passed", detail + (" (stochastic forward: accuracies compared)" if stochastic else ""))
    return _check("eps-zero", "failed", detail + ": the attack changes predictions without moving the input "
                                                 "(preprocessing, clipping or dtype on the attack path)")


def input_range(model: nn.Module, x: torch.Tensor, y: torch.Tensor, stats: tuple) -> dict:
    """Clean accuracy on [0, 1] pixels against the other usual input conventions (`wrong_range` decides)."""
    mean, std = (torch.tensor(s, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for s in stats)
    conventions = {"mean/std normalised": (x - mean) / std, "[0, 255]": 255 * x, "[-1, 1]": 2 * x - 1}
    logits = _logits(model, x)
    base = (logits.argmax(1) == y).float().mean().item()
    acc = {name: (_logits(model, z).argmax(1) == y).float().mean().item() for name, z in conventions.items()}
    best = max(acc, key=acc.get)
    detail = f"clean accuracy on [0, 1] pixels {100 * base:.2f}%; " + ", ".join(
        f"{k} {100 * v:.2f}%" for k, v in acc.items())
    if wrong_range(base, acc[best], logits.shape[1]):
        return _check("input-range", "failed", f"{detail}: the model expects {best} inputs; put its normalisation "
                                               f"inside the model, so that attacks work in [0, 1] pixel space")
    return _check("input-range", "passed", detail)


def wrong_range(base: float, best: float, n_classes: int) -> bool:
    """Whether another input convention's clean accuracy `best` shows the model expects it rather than
    [0, 1] pixels (`base`): only when `best` is clearly above chance (ABOVE_CHANCE), by more than
    RANGE_MARGIN, or by at least half of [0, 1]'s error and MIN_GAP (a model at 90% on [0, 1] and 99%
    normalised has lost most of its accuracy to the wrong convention, though the gap is 9 points)."""
    gap = best - base
    if best < 1 / n_classes + ABOVE_CHANCE or gap < MIN_GAP:
        return False
    return gap > RANGE_MARGIN or gap >= (1 - base) / 2


def deterministic(model: nn.Module, x: torch.Tensor) -> dict:
    """Two forwards of the same inputs; "handled" when they differ (AutoAttack's rand version is used)."""
    same, diff = _same(_logits(model, x), _logits(model, x))
    if same:
        return _check("deterministic", "passed", f"two forwards of {len(x)} examples agree (max diff {diff:.2g})")
    return _check("deterministic", "handled", f"stochastic forward (two forwards differ by up to {diff:.3g}): "
                                              f"AutoAttack runs its rand version ({', '.join(AUTOATTACK_RAND)}, "
                                              f"expectation over 20 draws per step)")


def finite_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The input gradient of the summed cross-entropy: any NaN or infinity fails."""
    xg = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg).float(), y, reduction="sum"), xg)
    bad = (~torch.isfinite(grad)).flatten(1).any(1)
    zero = (grad == 0).flatten(1).all(1)
    detail = f"{int(bad.sum())} of {len(y)} examples with a non-finite input gradient, {int(zero.sum())} with a zero one"
    return _check("finite-gradients", "failed" if bad.any() else "passed", detail)


def run_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, family: str, clip: bool,
               stats: tuple | None = None) -> list[dict]:
    """Every check on the first N_CHECK examples of (x, y), the model as it will be attacked (mode untouched).

    `stats`: (mean, std) of a normalisation left outside (default: the family's usual ones).
    """
    x, y = x[:N_CHECK], y[:N_CHECK]
    stats = stats or USUAL_STATS[family]
    with untouched(model):
        det = deterministic(model, x)
        stochastic = det["status"] == "handled"
        return [eval_mode(model, x, stochastic), eps_zero(model, x, y, clip, stochastic), input_range(model, x, y, stats), det,
                finite_gradients(model, x, y)]


def is_stochastic(checks: list[dict]) -> bool:
    """Whether the deterministic check found a stochastic forward."""
    return any(c["check"] == "deterministic" and c["status"] == "handled" for c in checks)


def failed(checks: list[dict]) -> list[dict]:
    return [c for c in checks if c["status"] == "failed"]


def as_flags(checks: list[dict]) -> list[dict]:
    """Checks that did not pass, as flags beside the gradient-masking ones ({"flag", "detail"})."""
    return [{"flag": f"setup check {c['check']} {c['status']}", "detail": c["detail"]}
            for c in checks if c["status"] != "passed"]
