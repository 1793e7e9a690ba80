"""Every attack of cat-bench, batched and device-agnostic, in [0,1] pixel space (L-inf).

White-box attacks (FGSM, PGD with CE / C&W margin / TRADES-KL losses, FAT's early-stopped PGD)
are one class, `PGD`. Square and AutoAttack run through pyautoattack. Every attack returns
x_adv with |x_adv - x| <= eps, and x_adv in [0,1] unless `clip=False` (the CAT MNIST code's
unclipped "paper" protocol, docs/method.md s4).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cat_bench.lazy import F, nn, torch

if TYPE_CHECKING:
    from cat_bench.distributed import Shard

LOSSES = ("ce", "cw", "kl")
RANDOM_STARTS = ("none", "uniform", "gaussian")


def feasible_box(x: torch.Tensor, eps: float, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds of the eps-ball around x, intersected with [0,1] when `clip` (docs/method.md s1, s4)."""
    if not clip:
        return x - eps, x + eps
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-example C&W margin loss -max(z_y - max_{j!=y} z_j + kappa, 0) (docs/method.md s1, Eq. 9)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -torch.clamp(z_y - others.amax(1) + kappa, min=0.0)


def kl_div(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p || q) between the softmaxes of two logit tensors, summed over classes."""
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def attack_loss(loss: str, logits: torch.Tensor, y: torch.Tensor, nat_logits: torch.Tensor | None,
                kappa: float) -> torch.Tensor:
    """The quantity PGD ascends, summed over the batch: CE, C&W margin or TRADES' KL(p(x)||p(x+delta))."""
    if loss == "ce":
        return F.cross_entropy(logits.float(), y, reduction="sum")
    if loss == "cw":
        return cw_margin(logits.float(), y, kappa).sum()
    if loss == "kl":
        return kl_div(nat_logits, logits).sum()
    raise ValueError(f"unknown PGD loss {loss!r}; allowed: {', '.join(LOSSES)}")


def random_init(x: torch.Tensor, kind: str, scale: float, shard: Shard | None = None) -> torch.Tensor:
    """Random start: uniform in [-scale, scale] (Madry/Rice, CAT) or scale * N(0,1) (TRADES, MART, FAT).

    With a `shard` (data-parallel training) the start is drawn for the whole global batch, in x's
    memory layout, and this rank's rows are kept: the ranks together draw what one process draws.
    """
    if kind == "none":
        return torch.zeros_like(x)
    if kind not in ("uniform", "gaussian"):
        raise ValueError(f"unknown random start {kind!r}; allowed: {', '.join(RANDOM_STARTS)}")
    if shard is None:
        like = torch.empty_like(x)
    else:
        layout = torch.channels_last if x.dim() == 4 and not x.is_contiguous() else torch.contiguous_format
        like = torch.empty((shard.n_global, *x.shape[1:]), dtype=x.dtype, device=x.device, memory_format=layout)
    noise = like.uniform_(-scale, scale) if kind == "uniform" else scale * torch.randn_like(like)
    return noise if shard is None else shard.take(noise)


@dataclass(frozen=True)
class PGD:
    """L-inf PGD (Madry et al.), the attack of Eq. 9 and of every white-box evaluation.

    steps=1, alpha=eps, random_start="none" is FGSM. `rs_scale` is the half-width of a uniform
    start (default eps) or the std of a gaussian one (default 0.001, TRADES' code). `tau` turns
    on FAT's early stop (Zhang et al. 2020, Alg. 1): an example whose current iterate is
    misclassified keeps moving for at most `tau` more steps, then is frozen.

    `clip=False` keeps iterates in the eps-ball only, not in [0,1] (CAT's MNIST code).
    `clip_start=False` leaves the random start itself unprojected, so the first gradient is taken
    at x + 0.001 N(0,1) even where that leaves [0,1] (the TRADES and MART codes; FAT clips it).
    `shard`: x is this rank's rows of a data-parallel global batch (`random_init`); not a setting.
    """

    eps: float
    alpha: float
    steps: int
    loss: str = "ce"
    random_start: str = "none"
    rs_scale: float | None = None
    kappa: float = 0.0
    tau: int | None = None
    clip: bool = True
    clip_start: bool = True
    shard: Shard | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown PGD loss {self.loss!r}; allowed: {', '.join(LOSSES)}")
        if self.random_start not in RANDOM_STARTS:
            raise ValueError(f"unknown random start {self.random_start!r}; allowed: {', '.join(RANDOM_STARTS)}")

    def settings(self) -> dict:
        """The attack's full settings, for records."""
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "loss": self.loss,
                "random_start": self.random_start, "rs_scale": self._rs_scale(), "kappa": self.kappa,
                "tau": self.tau, "clip": self.clip, "clip_start": self.clip_start}

    def _rs_scale(self) -> float | None:
        if self.random_start == "none":
            return None
        if self.rs_scale is not None:
            return self.rs_scale
        return self.eps if self.random_start == "uniform" else 0.001

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return adversarial examples for (x, y); the model's train/eval mode is left as the caller set it."""
        x = x.detach()
        nat_logits = None
        if self.loss == "kl":
            with torch.no_grad():
                nat_logits = model(x).float()
        lo, hi = feasible_box(x, self.eps, self.clip)
        x_adv = x + random_init(x, self.random_start, self._rs_scale() or 0.0, self.shard)
        if self.clip_start:
            x_adv = torch.minimum(torch.maximum(x_adv, lo), hi)
        if self.tau is not None:
            budget = torch.full_like(y, self.tau)
            active = torch.ones_like(y, dtype=torch.bool)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            loss = attack_loss(self.loss, logits, y, nat_logits, self.kappa)
            (grad,) = torch.autograd.grad(loss, x_adv)
            step = self.alpha * grad.sign()
            if self.tau is not None:
                wrong = logits.argmax(1) != y
                active = active & ~(wrong & (budget == 0))
                budget = budget - (wrong & active).long()
                step = step * active.view(-1, *([1] * (x.dim() - 1)))
            x_adv = torch.minimum(torch.maximum(x_adv.detach() + step, lo), hi)
        return x_adv.detach()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with the model in eval mode, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


AUTOATTACK_LOG_EVERY = 30.0  # seconds between two progress lines within a sub-attack


def _clean_correct(adversary, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Which examples the model classifies correctly: pyautoattack's own first step (a misclassified
    example is not robust), done once here so that every later call gets correct examples only."""
    out = []
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size].to(adversary.device), y[start:start + batch_size].to(adversary.device)
            out.append(adversary.get_logits(xb).argmax(1) == yb)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=adversary.device)


def _subattack(adversary, name: str, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, robust: torch.Tensor,
               batch_size: int, log: Callable[[str], None]) -> None:
    """One sub-attack on the examples `idx` (all classified correctly), a batch at a time, clearing the
    flags in `robust` of the examples it breaks; a line at most every AUTOATTACK_LOG_EVERY seconds and
    one at the end: examples done, robust accuracy so far, time left.

    Each call of `run_standard_evaluation` gets exactly one of the batches its single call on all of
    `idx` would form (the same examples, in order), and pyautoattack seeds every batch afresh
    (`get_seed()` before each `perturb`), so the flags are those of that single call."""
    began = last = time.monotonic()
    for start in range(0, len(idx), batch_size):
        chunk = idx[start:start + batch_size]
        _, y_adv = adversary.run_standard_evaluation(x[chunk], y[chunk], batch_size=batch_size)
        robust[chunk] = y_adv.to(robust.device) == y[chunk].to(robust.device)
        done, now = start + len(chunk), time.monotonic()
        if done == len(idx) or now - last >= AUTOATTACK_LOG_EVERY:
            last = now
            left = (now - began) / done * (len(idx) - done)
            tail = f"{now - began:.0f} s" if done == len(idx) else f"about {left:.0f} s left"
            log(f"  {name}: {done}/{len(idx)} examples attacked, robust accuracy so far "
                f"{100 * robust.float().mean().item():.2f}% ({tail})")


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attacks: list[str],
                   robust: torch.Tensor, *, batch_size: int, seed: int, device: torch.device,
                   on_attack_done: Callable[[str, torch.Tensor], None], log_file=None,
                   version: str = "standard", log: Callable[[str], None] = lambda message: None) -> torch.Tensor:
    """Run pyautoattack's sub-attacks one at a time on the points still robust, in standard settings.

    `robust` flags the examples no earlier sub-attack broke (all True on a fresh start, or the flags
    saved after the last finished sub-attack). After each sub-attack, `on_attack_done(name, robust)`
    lets the caller checkpoint, since pyautoattack's own `state_path` resume is unreliable.
    Returns the final robust flags. Square alone is `attacks=["square"]` (5000 queries, p_init 0.8).
    `version="rand"` (a stochastic forward): APGD with an expectation over 20 draws per step (EOT).
    `log` gets a line as each sub-attack starts (the points it attacks), lines while it runs (examples
    done, robust accuracy so far, time left) and one as it ends, so an evaluation of hours shows where it is.
    """
    from pyautoattack import AutoAttack

    logger = logging.getLogger("auto-attack")
    handler = None
    if log_file is not None:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        adversary = AutoAttack(model, norm="Linf", eps=eps, version=version, device=device, seed=seed)
        robust = robust.clone()
        idx = robust.nonzero().squeeze(1)
        robust[idx] = _clean_correct(adversary, x[idx], y[idx], batch_size).to(robust.device)
        for i, name in enumerate(attacks, start=1):
            idx = robust.nonzero().squeeze(1)
            if len(idx) > 0:
                adversary.attacks_to_run = [name]
                logger.info("running %s on %d robust points", name, len(idx))
                log(f"  {name} ({i}/{len(attacks)}): attacking the {len(idx)} of {len(y)} examples still robust")
                _subattack(adversary, name, x, y, idx, robust, batch_size, log)
                logger.info("robust accuracy after %s: %.4f", name, robust.float().mean().item())
            on_attack_done(name, robust)
        return robust
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
