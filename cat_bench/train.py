"""The training core every method shares (METHOD.md s3).

`resolve_config` turns command-line choices into a fully resolved config (the run's identity);
`train` runs it into a run directory: per-epoch checkpoint with everything needed to continue,
append-only history, best-checkpoint selection on natural + robust accuracy, a `done` marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from cat_bench import records
from cat_bench.attacks import PGD
from cat_bench.data import TensorLoader, dataset_info, load_split, split_train_val
from cat_bench.errors import UsageError
from cat_bench.evaluate import correct_under, default_batch_size
from cat_bench.methods import TrainAttack, get_method, resolve_hparams
from cat_bench.models import build_classifier, build_mask_net
from cat_bench.presets import DEFAULT_ARCH, SELECTION, schedule_for
from cat_bench.progress import progress_bar

SELECT_ON = ("test", "val")


def resolve_config(method: str, dataset: str, eps: float, *, arch: str | None = None, epochs: int | None = None,
                   seed: int = 0, overrides: dict[str, str] | None = None, select_on: str = "test",
                   select_n: int | None = None, batch_size: int | None = None,
                   n_train: int | None = None) -> dict[str, Any]:
    """The fully resolved config of a training run: every constant the run depends on, with defaults filled.

    Raises UsageError for unknown names and out-of-range values, naming what is allowed.
    """
    info = dataset_info(dataset)
    cls = get_method(method)
    if not 0 < eps <= 1:
        raise UsageError(f"eps {eps!r} is outside (0, 1]; give it in [0,1] pixel units, e.g. 0.3 or 0.0314 (8/255)")
    if select_on not in SELECT_ON:
        raise UsageError(f"--select-on {select_on!r}; allowed: {', '.join(SELECT_ON)}")
    for name, value in (("epochs", epochs), ("select-n", select_n), ("batch-size", batch_size),
                        ("n-train", n_train)):
        if value is not None and value < 1:
            raise UsageError(f"--{name} {value!r} must be a positive integer")
    arch = arch or DEFAULT_ARCH[info.family]
    with torch.device("meta"):  # validates the architecture name without allocating weights
        build_classifier(arch, info.num_classes, info.shape[0], info.mean, info.std)
    schedule = schedule_for(info.family, dataset, arch).as_dict()
    schedule.pop("source")
    if epochs is not None:
        schedule["epochs"] = epochs
    if batch_size is not None:
        schedule["batch_size"] = batch_size
    selection = SELECTION[info.family].as_dict()
    config = {
        "method": cls.name, "dataset": dataset, "n_train": n_train, "arch": arch, "eps": eps, "seed": seed,
        "hparams": resolve_hparams(method, info.family, overrides or {}),
        "schedule": schedule,
        "train_attack": {"eps": eps, "alpha": eps * schedule["attack_step_ratio"], "steps": schedule["attack_steps"]},
        "selection": {"on": select_on, "n": select_n, "attack": selection},
    }
    return json.loads(json.dumps(config))  # the form it has once stored (tuples become lists)


def resolve_device(name: str | None) -> torch.device:
    """The device to run on: the given name, else CUDA when present, else CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; allowed: cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


class Networks:
    """f (and g for methods with a mask net) for a resolved config, on a device."""

    def __init__(self, config: dict, device: torch.device):
        info = dataset_info(config["dataset"])
        self.f = build_classifier(config["arch"], info.num_classes, info.shape[0], info.mean, info.std)
        self.g = build_mask_net(info.family, info.shape[0]) if get_method(config["method"]).uses_mask_net else None
        for net in self.all().values():
            net.to(device)
            if device.type == "cuda":
                net.to(memory_format=torch.channels_last)

    def all(self) -> dict[str, torch.nn.Module]:
        return {k: v for k, v in (("f", self.f), ("g", self.g)) if v is not None}

    def state(self) -> dict[str, dict]:
        return {k: v.state_dict() for k, v in self.all().items()}

    def load(self, state: dict[str, dict]) -> None:
        for k, net in self.all().items():
            net.load_state_dict(state[k])


def _optimizer(schedule: dict, params) -> torch.optim.Optimizer:
    """SGD or Adam as the schedule preset says (METHOD.md s3), the same for f and g."""
    if schedule["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=schedule["lr"], weight_decay=schedule["weight_decay"])
    return torch.optim.SGD(params, lr=schedule["lr"], momentum=schedule["momentum"],
                           weight_decay=schedule["weight_decay"])


def _selection_data(config: dict, data_root, x_train, y_train):
    """The split the per-epoch selection metric runs on, and the training split that remains."""
    sel = config["selection"]
    if sel["on"] == "val":
        train_idx, val_idx = split_train_val(len(y_train), len(y_train) // 10, config["seed"])
        x_sel, y_sel = x_train[val_idx], y_train[val_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    else:
        x_sel, y_sel = load_split(config["dataset"], "test", data_root)
    if sel["n"] is not None:
        x_sel, y_sel = x_sel[: sel["n"]], y_sel[: sel["n"]]
    return x_train, y_train, x_sel, y_sel


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _prepare_run_dir(out: Path, config: dict, resume: bool) -> dict | None:
    """Check the run directory against the config; return the checkpoint to resume from, if any."""
    cfg_path = out / records.CONFIG
    if cfg_path.exists():
        stored = records.read_json(cfg_path)
        if stored.get("identity") != config:
            raise UsageError(f"{out} holds a different run (config.json differs); choose another --out")
        if (out / records.LAST).exists() and not resume:
            raise UsageError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
    if resume and (out / records.LAST).exists():
        return records.load_checkpoint(out / records.LAST)
    return None


def train(config: dict, out: Path, *, resume: bool = False, data_root=None, device: torch.device | None = None,
          compile: bool = False, progress: bool = True, log=print) -> dict:
    """Train a resolved config into `out`; returns the `done` summary. Resumes from checkpoints/last.pt."""
    out = Path(out)
    device = device or resolve_device(None)
    if (out / records.DONE).exists():
        if records.read_json(out / records.CONFIG).get("identity") != config:
            raise UsageError(f"{out} holds a different, finished run; choose another --out")
        log(f"{out}: already done")
        return records.read_json(out / records.DONE)
    ckpt = _prepare_run_dir(out, config, resume)
    out.mkdir(parents=True, exist_ok=True)
    info = dataset_info(config["dataset"])
    schedule = config["schedule"]
    torch.manual_seed(config["seed"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    x_train, y_train = load_split(config["dataset"], "train", data_root)
    if config["n_train"] is not None:
        x_train, y_train = x_train[: config["n_train"]], y_train[: config["n_train"]]
    x_train, y_train, x_sel, y_sel = _selection_data(config, data_root, x_train, y_train)
    loader = TensorLoader(x_train, y_train, schedule["batch_size"], device, shuffle=True,
                          augment=info.family == "cifar", seed=config["seed"])
    x_sel, y_sel = x_sel.to(device), y_sel.to(device)

    nets = Networks(config, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    f_run = torch.compile(nets.f) if compile else nets.f
    method = get_method(config["method"])(f_run, nets.g, config["hparams"], TrainAttack(**config["train_attack"]),
                                          autocast)
    trained = method.modules()
    optimizers = {k: _optimizer(schedule, m.parameters()) for k, m in trained.items()}
    schedulers = {k: torch.optim.lr_scheduler.MultiStepLR(o, list(schedule["milestones"]), gamma=0.1)
                  for k, o in optimizers.items()}
    sel = config["selection"]["attack"]
    eval_batch = default_batch_size(device)
    select_attack = PGD(eps=sel["eps"], alpha=sel["alpha"], steps=sel["steps"], loss=sel["loss"],
                        random_start=sel["random_start"])

    start, best = 0, {"epoch": None, "score": float("-inf")}
    if ckpt is None:
        records.write_json(out / records.CONFIG, {"identity": config, "provenance": records.provenance(device)})
        (out / records.HISTORY).unlink(missing_ok=True)
    else:
        nets.load(ckpt["nets"])
        for k in optimizers:
            optimizers[k].load_state_dict(ckpt["optimizers"][k])
            schedulers[k].load_state_dict(ckpt["schedulers"][k])
        _set_rng_state(ckpt["rng"], device)
        start, best = ckpt["epoch"], ckpt["best"]
        kept = [r for r in records.read_jsonl(out / records.HISTORY) if r["epoch"] <= start]
        (out / records.HISTORY).unlink(missing_ok=True)
        for row in kept:
            records.append_jsonl(out / records.HISTORY, row)
        log(f"{out}: resuming after epoch {start}")

    records.append_jsonl(out / records.SESSIONS, {"pid": os.getpid(), "host": socket.gethostname(),
                                                  "start_epoch": start, "started": time.time()})
    began = time.time()
    with progress_bar(schedule["epochs"] - start, f"{out.name} epochs", enabled=progress) as next_epoch:
        for epoch in range(start, schedule["epochs"]):
            t0 = time.time()
            for net in trained.values():
                net.train()
            sums: dict[str, torch.Tensor] = {}
            with progress_bar(len(loader), f"epoch {epoch + 1}/{schedule['epochs']}", enabled=progress) as advance:
                for x, y in loader.epoch(epoch):
                    if device.type == "cuda":
                        x = x.contiguous(memory_format=torch.channels_last)
                    losses = method.update(x, y, optimizers, epoch + 1)
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                    advance()
            lr = optimizers["f"].param_groups[0]["lr"]
            for s in schedulers.values():
                s.step()
            train_seconds = time.time() - t0

            nets.f.eval()
            with contextlib.nullcontext() if autocast is None else autocast:
                nat = correct_under(nets.f, x_sel, y_sel, None, eval_batch).sum().item() / len(y_sel)
                rob = correct_under(nets.f, x_sel, y_sel, select_attack, eval_batch).sum().item() / len(y_sel)
            score = nat + rob
            if score > best["score"]:
                best = {"epoch": epoch + 1, "score": score}
                records.save_checkpoint(out / records.BEST, {"nets": nets.state(), "epoch": epoch + 1, "score": score})
            row = {"epoch": epoch + 1, "lr": lr, "train": {k: (v / len(loader)).item() for k, v in sums.items()},
                   "nat_acc": nat, "rob_acc": rob, "score": score, "best_epoch": best["epoch"],
                   "train_seconds": train_seconds, "images_per_s": len(y_train) / train_seconds,
                   "seconds": time.time() - t0}
            records.append_jsonl(out / records.HISTORY, row)
            records.save_checkpoint(out / records.LAST, {
                "nets": nets.state(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in schedulers.items()}, "rng": _rng_state(device),
                "epoch": epoch + 1, "best": best})
            losses_txt = " ".join(f"{k} {v:.4f}" for k, v in row["train"].items())
            log(f"epoch {epoch + 1}/{schedule['epochs']}: {losses_txt} | nat {100 * nat:.2f} rob {100 * rob:.2f} "
                f"(best epoch {best['epoch']}) | {row['images_per_s']:.0f} img/s")
            next_epoch()

    summary = {"best_epoch": best["epoch"], "best_score": best["score"], "epochs": schedule["epochs"],
               "seconds_this_session": time.time() - began}
    records.write_json(out / records.DONE, summary)
    return summary
