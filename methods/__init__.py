"""Method adapters, registered by name (installed as `cat_bench.methods`).

The folder is the top-level `methods/` of the repository; pyproject.toml maps it to the
`cat_bench.methods` package so it never collides with another distribution's `methods`.
"""

from __future__ import annotations

from typing import Any

from cat_bench.errors import UsageError
from cat_bench.methods.base import Hparam, Method, TrainAttack
from cat_bench.methods.cat import CATcent, CATcw
from cat_bench.methods.fat import FAT
from cat_bench.methods.at import AT
from cat_bench.methods.natural import Natural
from cat_bench.methods.mart import MART
from cat_bench.methods.trades import TRADES

METHODS: dict[str, type[Method]] = {m.name: m for m in (Natural, AT, TRADES, MART, FAT, CATcent, CATcw)}

__all__ = ["METHODS", "Hparam", "Method", "TrainAttack", "get_method", "resolve_hparams"]


def get_method(name: str) -> type[Method]:
    """The adapter class registered as `name`."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def resolve_hparams(name: str, family: str, overrides: dict[str, str]) -> dict[str, Any]:
    """A method's defaults for a dataset family with `--set key=value` overrides applied and checked."""
    cls = get_method(name)
    hparams = {k: hp.default(family) for k, hp in cls.HPARAMS.items()}
    for key, raw in overrides.items():
        if key not in cls.HPARAMS:
            allowed = ", ".join(cls.HPARAMS) or "none"
            raise UsageError(f"unknown hyperparameter {key!r} for method {name!r}; allowed: {allowed}")
        hp = cls.HPARAMS[key]
        if hp.choices is not None:
            if raw not in hp.choices:
                raise UsageError(f"bad value {raw!r} for {key}; allowed: {', '.join(map(str, hp.choices))}")
            hparams[key] = raw
            continue
        hparams[key] = _number(key, raw, integer=isinstance(hp.default(family), int))
    return hparams


def _number(key: str, raw: str, integer: bool) -> float | int:
    """Parse a `--set` value as a finite number (an integer where the default is one)."""
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"bad value {raw!r} for {key}: expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"bad value {raw!r} for {key}: expected a finite number")
    if integer:
        if not value.is_integer():
            raise UsageError(f"bad value {raw!r} for {key}: expected an integer")
        return int(value)
    return value
