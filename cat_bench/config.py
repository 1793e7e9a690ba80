"""A run's identity: command-line choices resolved into the full config a run directory records.

`resolve_config` fills in the method's official protocol (or the uniform one), the pixel-domain
protocol, the training and selection attacks; `config_sources` says where each default comes from;
`differing_keys` names what two configs disagree on. The planner, the doctor and the suites build
configs here without importing the training loop (cat_bench.train).
"""

from __future__ import annotations

import json
from typing import Any

from cat_bench.data import dataset_info
from cat_bench.errors import UsageError
from cat_bench.methods import default_arch, get_method, protocol_for, resolve_hparams
from cat_bench.models import check_arch
from cat_bench.options import resolve_options
from cat_bench.presets import SELECTION, clips

SEED_LIMIT = 2 ** 32  # numpy's seeds (the batch order) are below 2**32


def resolve_config(method: str, dataset: str, eps: float, *, seed: int = 0, overrides: dict[str, str] | None = None,
                   **options: Any) -> dict[str, Any]:
    """The fully resolved config of a training run: every constant the run depends on, with defaults filled.

    `options`: the run options (cat_bench.options.RUN_OPTIONS: arch, schedule, protocol, precision,
    ema, epochs, batch_size, n_train, select_on, select_n), each checked and defaulted there.
    `ema` is a key of the config only when given, so runs without it keep their names. Raises
    UsageError for unknown names and out-of-range values, naming what is allowed.
    """
    info = dataset_info(dataset)
    cls = get_method(method)
    if not 0 < eps <= 1:
        raise UsageError(f"eps {eps!r} is outside (0, 1]; give it in [0,1] pixel units, e.g. 0.3 or 0.0314 (8/255)")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
        raise UsageError(f"seed {seed!r} is out of range; allowed: a whole number from 0 to {SEED_LIMIT - 1} "
                         f"(numpy's and torch's seed range)")
    o = resolve_options(options)
    arch, schedule, protocol, n_train = o["arch"], o["schedule"], o["protocol"], o["n_train"]
    arch = arch or default_arch(method, info.family, schedule)
    check_arch(arch, info.shape)
    proto = protocol_for(method, dataset, arch, schedule)
    sched = {"name": schedule, **proto.as_dict()}
    for key in ("source", "hparams", "attack_steps", "attack_step", "attack_step_ratio", "eps_decimals",
                "selection", "select_at_train_eps", "milestones_follow_epochs"):
        sched.pop(key)
    sched["train_skip"] = proto.train_skip if dataset == "mnist" else 0  # the script's own dataset only
    if n_train is not None:  # what training uses and records: never more than the split holds
        n_train = min(n_train, info.n_train - sched["train_skip"])
    if o["epochs"] is not None:
        if proto.milestones_follow_epochs and o["epochs"] != proto.epochs:
            sched["milestones"] = [m * o["epochs"] / proto.epochs for m in proto.milestones]
        sched["epochs"] = o["epochs"]
    if o["batch_size"] is not None:
        sched["batch_size"] = o["batch_size"]
    train_clip = clips(info.family, protocol) or cls.clips_on_mnist
    train_attack = proto.train_attack(eps, train_clip)
    selection = SELECTION[info.family].as_dict()
    if proto.select_at_train_eps:
        selection["eps"] = eps
    selection["clip"] = clips(info.family, protocol)
    config = {
        "method": cls.name, "dataset": dataset, "n_train": n_train, "arch": arch, "eps": eps, "seed": seed,
        "protocol": protocol, "precision": o["precision"],
        "hparams": resolve_hparams(method, info.family, overrides or {}, proto),
        "schedule": sched,
        "train_attack": train_attack,
        "selection": {"on": o["select_on"], "n": o["select_n"], "rule": proto.selection, "attack": selection},
    }
    if o["ema"] is not None:
        config["ema"] = o["ema"]
    return json.loads(json.dumps(config))  # the form it has once stored (tuples become lists)


def config_sources(config: dict) -> dict:
    """Where each default of a resolved config comes from: the protocol's script, each hyperparameter's source."""
    cls = get_method(config["method"])
    proto = protocol_for(config["method"], config["dataset"], config["arch"], config["schedule"]["name"])
    return {"protocol": proto.source, "hparams": {k: hp.source for k, hp in cls.HPARAMS.items()}}


def differing_keys(held: dict, wanted: dict, prefix: str = "") -> str:
    """The keys (dotted, with both values) where two resolved configs differ, e.g. "eps: 0.3 vs 0.4"."""
    parts = []
    for key in sorted(set(held) | set(wanted)):
        a, b = held.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = differing_keys(a, b, f"{prefix}{key}.")
            parts += [inner] if inner else []
        elif a != b:
            parts.append(f"{prefix}{key}: {a!r} there vs {b!r} asked")
    return "; ".join(parts)
