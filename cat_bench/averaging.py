"""Weight averaging: an exponential moving average (EMA) of f's weights, evaluated instead of f.

`--ema DECAY` (a suite's `ema = DECAY`) works with every method: after each training step the
average moves towards f's new weights, W_ema <- DECAY * W_ema + (1 - DECAY) * W_f (the first step
copies f), BatchNorm's running statistics included. The per-epoch selection scores the average,
and checkpoints/best.pt holds it as "f", so `cat-bench eval` and `submit` see the averaged
classifier; checkpoints/last.pt holds f and the average both, so a resumed run continues the
same average. Built on torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn.

The decay is part of the run's identity (config["ema"]) only when it is given: a run without it
keeps the name it always had.
"""

from __future__ import annotations

import math

from cat_bench.errors import UsageError
from cat_bench.lazy import nn


def check_decay(decay: float) -> float:
    """The EMA's decay if it lies in (0, 1); else UsageError naming the value."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) \
            or not 0 < decay < 1:
        raise UsageError(f"--ema {decay!r} is outside (0, 1); give the average's decay per step, e.g. 0.999")
    return float(decay)


class WeightAverage:
    """The EMA of a network's parameters and buffers (AveragedModel, use_buffers=True)."""

    def __init__(self, f: nn.Module, decay: float):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.averaged = AveragedModel(f, multi_avg_fn=get_ema_multi_avg_fn(check_decay(decay)), use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged network, with f's architecture and state-dict keys."""
        return self.averaged.module

    def update(self, f: nn.Module) -> None:
        """Move the average towards f's weights after a training step."""
        self.averaged.update_parameters(f)

    def state_dict(self) -> dict:
        """The average and its step count, for checkpoints/last.pt."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
