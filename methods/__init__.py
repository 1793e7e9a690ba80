"""Method adapters, registered by name (installed as `cat_bench.methods`).

The folder is the top-level `methods/` of the repository; pyproject.toml maps it to the
`cat_bench.methods` package so it never collides with another distribution's `methods`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cat_bench.data import dataset_info
from cat_bench.errors import UsageError
from cat_bench.presets import SCHEDULES
from cat_bench.methods.base import Hparam, Method, Protocol, TrainAttack
from cat_bench.methods.cat import CATcent, CATcw
from cat_bench.methods.fat import FAT
from cat_bench.methods.at import AT
from cat_bench.methods.awp import ATAWP, TRADESAWP
from cat_bench.methods.natural import Natural
from cat_bench.methods.mart import MART
from cat_bench.methods.trades import TRADES

# The registry: a method is its class here and its import above (docs/extending.md).
METHODS: dict[str, type[Method]] = {m.name: m for m in (
    Natural,
    AT,
    TRADES,
    MART,
    FAT,
    CATcent,
    CATcw,
    ATAWP, TRADESAWP,
)}

__all__ = ["METHODS", "SCHEDULES", "Hparam", "Method", "Protocol", "TrainAttack", "default_arch", "get_method", "health_keys",
           "protocol_for", "resolve_hparams"]

UNIFORM = CATcent
# The roles `cat-bench doctor` checks methods in: plain training (the model its attack checks break)
# and the one-network adversarial training beside UNIFORM's two networks.
PLAIN, ONE_NETWORK = Natural, AT


def get_method(name: str) -> type[Method]:
    """The adapter class registered as `name`."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def health_keys() -> dict[str, str]:
    """Every health flag any registered method declares (`Method.HEALTH_FLAGS`): history key -> what it watches."""
    return {key: what for method in METHODS.values() for key, what in method.HEALTH_FLAGS.items()}


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise UsageError(f"--schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def default_arch(name: str, family: str, schedule: str = "official") -> str:
    """The architecture a method's official script trains on a dataset family (uniform: CAT's)."""
    _check_schedule(schedule)
    cls = get_method(name) if schedule == "official" else UNIFORM
    return cls.DEFAULT_ARCH[family]


def protocol_for(name: str, dataset: str, arch: str, schedule: str = "official") -> Protocol:
    """The Protocol a method trains with on (dataset, arch): its authors' script, else CAT's.

    mnist-mini takes MNIST's protocol. Under `schedule="uniform"` every method takes CAT's.
    """
    _check_schedule(schedule)
    base = dataset_info(dataset).protocols
    own = get_method(name)
    for cls in ((own, UNIFORM) if schedule == "official" else (UNIFORM,)):
        for key in ((base, arch), (base, "*")):
            if key in cls.PROTOCOLS:
                proto = cls.PROTOCOLS[key]
                if cls is UNIFORM and own is not UNIFORM and not issubclass(own, UNIFORM):
                    why = "--schedule uniform" if schedule == "uniform" else f"no official {base} script for {name}"
                    proto = replace(proto, hparams={}, source=f"{why}: the uniform protocol (CAT's), {proto.source}")
                return proto
    raise UsageError(f"no training protocol for dataset {dataset!r}; known: {sorted({d for d, _ in UNIFORM.PROTOCOLS})}")


def resolve_hparams(name: str, family: str, overrides: dict[str, str],
                    protocol: Protocol | None = None) -> dict[str, Any]:
    """A method's defaults for a dataset family, then its protocol's values, then `--set key=value`
    overrides, each checked."""
    cls = get_method(name)
    lacking = [k for k, hp in cls.HPARAMS.items() if family not in hp.values()]
    if lacking:
        raise UsageError(f"method {name!r} has no default for dataset family {family!r} of its hyperparameter(s) "
                         f"{', '.join(lacking)}; its defaults are for: {', '.join(cls.HPARAMS[lacking[0]].values())}")
    hparams = {k: hp.default(family) for k, hp in cls.HPARAMS.items()}
    if protocol is not None:
        hparams.update({k: v for k, v in protocol.hparams.items() if k in hparams})
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
        value = _number(key, raw, integer=isinstance(hp.default(family), int))
        if not hp.low <= value <= hp.high:
            high = "" if hp.high == float("inf") else f" <= {hp.high:g}"
            raise UsageError(f"bad value {raw!r} for {key} of {name}: allowed: {hp.low:g} <= {key}{high}")
        hparams[key] = value
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
