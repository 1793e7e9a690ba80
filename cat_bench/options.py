"""The options of a training run's identity, declared once.

`cat-bench train`'s flags, a suite block's keys (and the schema `cat-bench list options` prints),
and `resolve_config`'s keywords, defaults and checks all come from `RUN_OPTIONS`. The structural
inputs (method, dataset, eps, seed, hyperparameters) have shapes of their own (a suite takes lists
of them) and stay with their users. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cat_bench.averaging import check_decay
from cat_bench.errors import UsageError
from cat_bench.presets import PIXEL_PROTOCOLS, PRECISIONS, SCHEDULES

SELECT_ON = ("test", "val")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class RunOption:
    """One option: its name (resolve_config's keyword and the suite key; the flag is --name-with-dashes),
    its type, its default (None: the method's protocol decides, or off), its help, and what is allowed."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    positive: bool = False
    check_value: Callable[[Any], Any] | None = None  # a custom check returning the value, e.g. the EMA's decay
    example: str = ""
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        """What values are allowed, in words."""
        if self.choices:
            return ", ".join(self.choices)
        if self.positive:
            return "a positive integer"
        return {int: "an integer", float: "a number", str: "a string"}[self.kind] + (
            f", e.g. {self.example}" if self.example else "")

    def check(self, value: Any) -> Any:
        """The value if allowed (None stands for the default); else UsageError naming it and what is allowed."""
        if value is None:
            return self.default
        typed = {int: _is_int, float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                 str: lambda v: isinstance(v, str)}[self.kind](value)
        if not typed or (self.choices and value not in self.choices) or (self.positive and value < 1):
            raise UsageError(f"{self.flag} {value!r}; allowed: {self.allowed()}")
        return self.check_value(value) if self.check_value else value

    def suite_shape(self, value: Any) -> bool:
        """Whether a suite's TOML value has this option's type (its range is checked by `check`)."""
        return _is_int(value) if self.kind is int else isinstance(value, self.kind) and not isinstance(value, bool)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        metavar = self.metavar or self.name.upper() if not self.choices else "{" + ",".join(self.choices) + "}"
        parser.add_argument(self.flag, type=self.kind, default=None, metavar=metavar, help=self.help)


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("arch", str, None, "classifier (default: the method's official script's; `cat-bench list methods`)",
              example='"wrn-34-10"'),
    RunOption("schedule", str, "official", "official (default: each method's authors' protocol, `cat-bench list "
              "methods`) or uniform (CAT's protocol for every method)", choices=SCHEDULES),
    RunOption("protocol", str, "paper", "paper (default: each official script's pixel domain; CAT on MNIST never "
              "clips to [0,1]) or valid (inputs always in [0,1], RobustBench's convention)", choices=PIXEL_PROTOCOLS),
    RunOption("precision", str, "fp32", "fp32 (default: the official scripts'), tf32 (CUDA TF32 math) or bf16 "
              "(autocast)", choices=PRECISIONS),
    RunOption("ema", float, None, "evaluate an exponential moving average of f's weights with this decay per step "
              "(default: off; cat_bench/averaging.py)", check_value=check_decay, example="0.999",
              metavar="DECAY"),
    RunOption("epochs", int, None, "epochs (default: the method's protocol)", positive=True),
    RunOption("batch_size", int, None, "batch size (default: the method's protocol)", positive=True),
    RunOption("n_train", int, None, "train on the first N training examples (default: all; quick runs)",
              positive=True, metavar="N"),
    RunOption("select_on", str, "test", "split of the per-epoch checkpoint selection: test (default: the paper, "
              "Appendix C) or val", choices=SELECT_ON),
    RunOption("select_n", int, None, "examples the selection measures (default: the whole split)", positive=True,
              metavar="N"),
)
OPTIONS = {o.name: o for o in RUN_OPTIONS}


def resolve_options(given: dict[str, Any]) -> dict[str, Any]:
    """Every run option, checked, with the defaults for those not given (or given as None); TypeError
    for a keyword that is no run option (a programming error, not a user's)."""
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise TypeError(f"not run options: {', '.join(sorted(unknown))}; options: {', '.join(OPTIONS)}")
    return {o.name: o.check(given.get(o.name)) for o in RUN_OPTIONS}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """`cat-bench train`'s flags for the run options (checked by `resolve_options`, which names what is allowed)."""
    for option in RUN_OPTIONS:
        option.add_to(parser)


def schema() -> list[str]:
    """The run options as a suite block's keys: one line each, for `cat-bench list options` and the docs."""
    width = max(len(o.name) for o in RUN_OPTIONS)
    return [f"{o.name:<{width}}  {o.flag:<{width + 2}}  {o.allowed()}: {o.help}" for o in RUN_OPTIONS]
