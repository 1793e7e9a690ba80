"""The training core every method shares (docs/method.md s3), running each method's own protocol.

`train` runs a resolved config (cat_bench.config.resolve_config: the run's identity) into a run directory: per-epoch checkpoint with everything
needed to continue, append-only history, the protocol's checkpoint selection, a `done` marker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import sys
import time
from pathlib import Path

from cat_bench import distributed, records
from cat_bench.attacks import PGD
from cat_bench.averaging import WeightAverage
from cat_bench.config import config_sources, differing_keys
from cat_bench.data import TensorLoader, load_split, resolve_data_root, split_train_val
from cat_bench.distributed import Group
from cat_bench.errors import CorruptRecord, Diverged, UsageError
from cat_bench.evaluate import correct_under, default_batch_size
from cat_bench.lazy import torch
from cat_bench.methods import Method, get_method
from cat_bench.methods.base import lr_at
from cat_bench.networks import Networks, compiled, precision_context, resolve_device
from cat_bench.presets import AttackPreset
from cat_bench.progress import progress_bar
from cat_bench.rundir import RunLock, check_writable, claim
from cat_bench.settings import Settings
from cat_bench.tracking import Trackers

def _finite_means(method: Method, sums: dict[str, torch.Tensor], n_steps: int, epoch: int) -> dict[str, float]:
    """The epoch's mean of each per-step loss as the method records them (`Method.epoch_means`, one read
    of the sums per epoch); Diverged if one is not finite, before the epoch is recorded or checkpointed
    (training on would only record NaN)."""
    means = method.epoch_means({k: (v / n_steps).item() for k, v in sums.items()})
    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
    if bad:
        raise Diverged(f"training diverged in epoch {epoch}: mean {', '.join(f'{k} {v}' for k, v in bad.items())}; "
                       f"the run stopped before recording it (its checkpoints hold epoch {epoch - 1}). Its settings "
                       f"(a hyperparameter such as beta, the learning rate, eps) make the loss overflow: change them")
    return means


def _warn_cpu_hours(config: dict, log) -> None:
    """Say so before a CPU training that the cost model (costs.py, at the CPU's measured rate) puts at an hour
    or more."""
    from cat_bench.costs import Pricer, run_gpu_hours

    rate = Pricer("cpu").rate(config)
    hours = run_gpu_hours(config, (), None, tflops=rate.tflops)
    if hours >= 1:
        log(f"WARNING: this run is estimated at {hours:.0f} hours on a CPU ({rate.detail}; cat_bench/costs.py); "
            f"for a quick run give --n-train and --epochs, or train on a GPU (--device cuda)")


def _trace_row(method: Method, losses: dict[str, torch.Tensor], epoch: int, batch: int, n_batches: int) -> dict:
    """One trace.jsonl line: where in training (1-based epoch and batch, global step) and the method's values."""
    return {"epoch": epoch + 1, "batch": batch + 1, "step": epoch * n_batches + batch + 1, **method.trace(losses)}


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


def _check_shareable(config: dict) -> None:
    """Refuse a run a group cannot train as one process would: a loss that adds a sum to a mean."""
    if get_method(config["method"]).reduction(config["hparams"]) == "mixed":
        raise UsageError(f"this {config['method']} run is single-process only: its loss adds a sum over the batch "
                         f"to a mean (CAT's g_kl_reduction=sum), which ranks cannot share by their batch "
                         f"fractions; train it without --nproc / --gpus-per-job")


def _rank_device(device: torch.device, group: Group) -> torch.device:
    """A rank's device: cuda:LOCAL_RANK on CUDA, else the device itself."""
    if device.type != "cuda":
        return device
    if group.local_rank >= torch.cuda.device_count():
        raise UsageError(f"rank {group.rank} needs cuda:{group.local_rank}; this node has "
                         f"{torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(group.local_rank)
    return torch.device("cuda", group.local_rank)


def _out_of_time(deadline: float, group: Group, device: torch.device) -> bool:
    """Whether the wall-clock budget is spent; in a group rank 0's clock decides for every rank."""
    late = torch.tensor(float(time.time() >= deadline), device=device)
    if group.world > 1:
        torch.distributed.broadcast(late, src=0)
    return bool(late.item())


def _summed(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each rank's weighted losses summed over the group: the global batch's means."""
    out = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in losses.items()}
    distributed.sum_weighted(list(out.values()), 1.0)
    return out


def _accuracy(model, x, y, attack: PGD | None, batch_size: int, group: Group) -> float:
    """The selection metric: accuracy on (x, y), clean or under `attack`, in batches of `batch_size`.

    In a group each rank attacks its rows of every batch, the batch's random start drawn whole
    (PGD's shard), and the counts are summed: the number one process gets, in 1/N of the time.
    """
    if group.world == 1:
        return correct_under(model, x, y, attack, batch_size).sum().item() / len(y)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(y), batch_size):
        rows = distributed.shard(len(y[i:i + batch_size]), group)
        xb, yb = rows.take(x[i:i + batch_size]), rows.take(y[i:i + batch_size])
        shard_attack = None if attack is None else dataclasses.replace(attack, shard=rows)
        correct += correct_under(model, xb, yb, shard_attack, len(yb) or 1).sum()
    distributed.sum_weighted([correct], 1.0)
    return correct.item() / len(y)


def _prepare_run_dir(out: Path, config: dict, resume: bool) -> dict | None:
    """Check the run directory against the config; return the checkpoint to resume from, if any."""
    cfg_path = out / records.CONFIG
    if cfg_path.exists():
        held = records.read_identity(out)
        if held != config:
            raise UsageError(f"{out} holds a different run (its config.json differs in {differing_keys(held, config)}); "
                             f"choose another --out")
        if (out / records.LAST).exists() and not resume:
            raise UsageError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
    if resume and (out / records.LAST).exists():
        return records.load_checkpoint(out / records.LAST)
    return None


def train(config: dict, out: Path, settings: Settings | None = None, *, resume: bool = False, log=print,
          trace_every: int = 10, group: Group | None = None) -> dict:
    """Train a resolved config into `out`; returns the `done` summary. Resumes from checkpoints/last.pt.

    `settings` (cat_bench.settings; default: `Settings()`): where and how the run computes, never
    what: the device, the data root, `compile` (None, eager, or a torch.compile mode for f,
    COMPILE_MODES; "reduce-overhead" replays CUDA graphs, for launch-bound small networks),
    `deterministic` (on CUDA, kernels that give the same bits every time, `cuda_kernels`, so a
    resumed run equals an uninterrupted one there too; without it cuDNN picks its fastest kernels),
    `trackers` (views of the records for TensorBoard, cat_bench.tracking, written by rank 0),
    progress, and two compute budgets: `stop_after_epoch` stops training once that epoch is
    checkpointed, writes no `done` and returns {"done": False, ...} (`--resume` continues);
    `deadline` (`--stop-after-minutes`) stops at the first epoch boundary after it, with that
    epoch checkpointed.

    `group`: this process's rank in a data-parallel group (default: the one RANK/WORLD_SIZE
    describe, else a single process). Every rank trains the same steps on its rows of each batch
    (cat_bench.distributed); rank 0 writes the records and logs. A group may resume a run that
    another number of ranks started.
    `trace_every`: a method's traced values (`Method.trace`: CAT's mask and losses) go to trace.jsonl
    on the first batch of each epoch and every `trace_every` batches after it.
    """
    out = Path(out)
    settings = settings or Settings()
    group = group or distributed.from_env()
    options = dict(resume=resume, log=log, trace_every=trace_every, group=group)
    if not group.main:  # the other ranks write nothing
        return _train(config, out, settings, **options)
    with RunLock(out):  # the writer holds the run's lock and writes only into a run directory
        claim(out, "run", create=False)
        check_writable(out, "run directory")
        return _train(config, out, settings, **options)


def cuda_kernels(deterministic: bool) -> None:
    """Choose CUDA's kernels for a run. Fast (the default): cuDNN benchmarks its algorithms and keeps
    the fastest, which may differ from call to call and sum in another order. Deterministic: cuDNN's
    deterministic algorithms, no benchmarking, and torch's deterministic implementations (a warning
    where an operation has none), with cuBLAS on a fixed workspace (CUBLAS_WORKSPACE_CONFIG, set
    here unless the environment sets it); torch's reproducibility notes list what this costs."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _train(config: dict, out: Path, settings: Settings, *, resume: bool, log, trace_every: int,
           group: Group) -> dict:
    """`train`'s work, with the run directory claimed and locked by its writer: open the run
    directory, load the data, build the networks and the method, start or resume, train epoch by
    epoch (each one trained, scored, recorded), then write `done`."""
    if (out / records.DONE).exists():
        return _already_done(out, config, log)
    ckpt = _prepare_run_dir(out, config, resume)
    device = resolve_device(settings.device)
    progress, deadline, stop_after_epoch = settings.progress, settings.deadline, settings.stop_after_epoch
    if device.type == "cpu" and group.main:
        _warn_cpu_hours(config, log)
    if group.world > 1:
        device = _join_group(config, device, group)
        if not group.main:
            progress, log = False, lambda message: None
    torch.manual_seed(config["seed"])
    if device.type == "cuda":
        cuda_kernels(settings.deterministic)
    run = _Session(config, out, group, device, log, progress, trace_every)
    run.load_data(settings.data_root)
    run.build(settings.compile)
    start, best = run.start(ckpt)
    run.curves = Trackers(list(settings.trackers) if group.main else [], out, start * len(run.loader) + 1)
    began = time.time()
    until = run.epochs if stop_after_epoch is None else max(start, min(run.epochs, stop_after_epoch))
    if group.main and until > start:  # a session that trains no epoch (its budget already spent) is none
        records.append_jsonl(out / records.SESSIONS, {"pid": os.getpid(), "host": socket.gethostname(),
                                                      "start_epoch": start, "started": began,
                                                      "ranks": group.world})
    budget = "--stop-after-epoch"
    with progress_bar(until - start, f"{out.name} epochs", enabled=progress) as next_epoch:
        for epoch in range(start, until):
            best = run.epoch(epoch, best)
            next_epoch()
            if deadline is not None and epoch + 1 < until and _out_of_time(deadline, group, device):
                until, budget = epoch + 1, "--stop-after-minutes"
                break
    run.curves.close()
    if until < run.epochs:
        log(f"{out}: stopped after epoch {until} of {run.epochs} ({budget}); continue with --resume")
        return {"done": False, "epochs_trained": until, "epochs": run.epochs}
    return run.finish(best, began)


def _already_done(out: Path, config: dict, log) -> dict:
    """The `done` summary of a finished run of this config (its records verified), without training."""
    held = records.read_identity(out)
    if held != config:
        raise UsageError(f"{out} holds a different, finished run (its config.json differs in "
                         f"{differing_keys(held, config)}); choose another --out")
    records.verify_run(out)  # done, but only while every record can be read
    log(f"{out}: already done")
    return records.read_json(out / records.DONE)


def _join_group(config: dict, device: torch.device, group: Group) -> torch.device:
    """Join the data-parallel group (a run it can share) on this rank's device; returns the device."""
    _check_shareable(config)
    device = _rank_device(device, group)
    distributed.init(group, device)
    return device


def _keep_records_until(out: Path, start: int) -> None:
    """Before a resume after epoch `start`: drop the history and trace rows an interrupted epoch wrote
    (each file replaced atomically, and only when a row goes). A history that does not hold epochs 1 to
    `start` once each disagrees with the checkpoint: the run's CorruptRecord, named, never trained on."""
    for name in (records.HISTORY, records.TRACE):
        rows = records.read_jsonl(out / name)
        try:
            kept = [r for r in rows if r["epoch"] <= start]
        except (KeyError, TypeError):
            raise CorruptRecord(f"corrupt record {out / name}: a row without an epoch number; the run cannot "
                                f"resume from it") from None
        epochs = [r["epoch"] for r in kept]
        if name == records.HISTORY and epochs != list(range(1, start + 1)):
            raise CorruptRecord(f"{out / name} disagrees with the checkpoint {out / records.LAST}: the checkpoint "
                                f"is after epoch {start}, the history holds epochs {epochs or 'none'} (one line per "
                                f"epoch expected, 1 to {start}); restore the history, or train the run again from "
                                f"scratch (cat-bench run --retrain)")
        if len(kept) < len(rows):
            records.write_jsonl(out / name, kept)


@dataclasses.dataclass
class Built:
    """What a training step needs: the run's networks, the method adapter on them (f compiled as asked,
    under the run's precision) and the adapter's optimisers."""

    nets: Networks
    method: Method
    optimizers: dict
    autocast: contextlib.AbstractContextManager


def build(config: dict, device: torch.device, compile: str | None = None, *, sync_batchnorm: bool = False) -> Built:
    """The networks, method adapter and optimisers of a run, as every training session builds them (and
    `cat-bench doctor` and the benchmarks, so that they check and time the loop's own step)."""
    nets = Networks(config, device)
    if sync_batchnorm:
        nets.sync_batchnorm()
    autocast = precision_context(config["precision"], device)
    method = nets.adapter(compiled(nets.f, compile), autocast)
    return Built(nets, method, method.configure_optimizers(config["schedule"]), autocast)


def step(built: Built, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
    """One training step of the loop on a batch already on the device (channels-last on CUDA): the method's
    `update` with its optimisers; `epoch` counts from 1."""
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return built.method.update(x, y, built.optimizers, epoch)


class _Session:
    """One training session of a run: its data, networks, method and weight average, and the steps
    `_train` takes with them (docs/method.md s3). Rank 0 of a group writes the records."""

    def __init__(self, config: dict, out: Path, group: Group, device: torch.device, log, progress: bool,
                 trace_every: int):
        self.config, self.out, self.group, self.device = config, out, group, device
        self.log, self.progress, self.trace_every = log, progress, trace_every
        self.schedule = config["schedule"]
        self.curves: Trackers | None = None

    def load_data(self, data_root) -> None:
        """The training split (less the protocol's skip, at most `n_train`) in a device loader, and
        the selection split on the device."""
        config, schedule = self.config, self.schedule
        self.data_root = str(resolve_data_root(data_root).resolve())  # recorded: eval finds the data again
        x_train, y_train = load_split(config["dataset"], "train", data_root)
        skip = schedule.get("train_skip", 0)
        x_train, y_train = x_train[skip:], y_train[skip:]
        if config["n_train"] is not None:
            x_train, y_train = x_train[: config["n_train"]], y_train[: config["n_train"]]
        x_train, y_train, x_sel, y_sel = _selection_data(config, data_root, x_train, y_train)
        self.loader = TensorLoader(x_train, y_train, schedule["batch_size"], self.device, shuffle=True,
                                   augment=schedule["augment"], seed=config["seed"])
        self.n_train = len(y_train)
        self.x_sel, self.y_sel = x_sel.to(self.device), y_sel.to(self.device)
        max_steps = schedule.get("max_steps")
        self.epochs = (schedule["epochs"] if max_steps is None
                       else min(schedule["epochs"], math.ceil(max_steps / len(self.loader))))

    def build(self, compile: str | None) -> None:
        """The networks, the method adapter with its optimisers, the weight average (`--ema`) and the
        selection attack."""
        config, device = self.config, self.device
        self.built = build(config, device, compile, sync_batchnorm=self.group.world > 1)
        self.nets, self.method, self.optimizers = self.built.nets, self.built.method, self.built.optimizers
        self.autocast = self.built.autocast
        self.average = WeightAverage(self.nets.f, config["ema"]) if "ema" in config else None
        sel = config["selection"]["attack"]
        self.eval_batch = default_batch_size(device)
        self.select_attack = AttackPreset.stored(sel).pgd(sel["clip"])

    def start(self, ckpt: dict | None) -> tuple[int, dict]:
        """A new run's config.json, or a resumed run's state from its checkpoint (the records of an
        interrupted epoch dropped); returns the epochs done and the best epoch so far."""
        out, group = self.out, self.group
        if ckpt is None:
            if group.main:
                claim(out, "run")  # made and marked now that the data is there: a failed start leaves no folder
                records.write_json(out / records.CONFIG, {"identity": self.config,
                                                          "run_name": records.run_name(self.config),
                                                          "sources": config_sources(self.config),
                                                          "provenance": records.provenance(self.device),
                                                          "data_root": self.data_root})
                (out / records.HISTORY).unlink(missing_ok=True)
                (out / records.TRACE).unlink(missing_ok=True)
            return 0, {"epoch": None, "score": float("-inf")}
        try:
            self.nets.load(ckpt["nets"])
            self.method.load_state_dict(ckpt)
            if self.average is not None:
                self.average.load_state_dict(ckpt["ema"])
            _set_rng_state(ckpt["rng"], self.device)
            start, best = int(ckpt["epoch"]), ckpt["best"]
        except (KeyError, RuntimeError, TypeError, IndexError, ValueError) as err:
            raise CorruptRecord(f"corrupt checkpoint {out / records.LAST}: {type(err).__name__}: {err}") from None
        if group.main:
            _keep_records_until(out, start)
        self.log(f"{out}: resuming after epoch {start}")
        return start, best

    def epoch(self, epoch: int, best: dict) -> dict:
        """Train, score and record one epoch (0-based `epoch`); returns the best epoch so far."""
        t0 = time.time()
        means, lr, n_steps = self.train_epoch(epoch)
        train_seconds = time.time() - t0
        nat, rob, score, best = self.select(epoch, best)
        n_images = min(self.n_train, n_steps * self.schedule["batch_size"])
        row = {"epoch": epoch + 1, "lr": lr, "train": means,
               "nat_acc": nat, "rob_acc": rob, "score": score, "best_epoch": best["epoch"],
               "train_seconds": train_seconds, "images_per_s": n_images / train_seconds,
               "seconds": time.time() - t0}
        self.record(row, best)
        return best

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], float, int]:
        """One epoch of the method's updates at the protocol's lr (the weight average after each);
        returns the epoch's mean losses, the last batch's lr and the number of steps."""
        loader, method, group = self.loader, self.method, self.group
        for net in method.modules().values():
            net.train()
        sums: dict[str, torch.Tensor] = {}
        max_steps = self.schedule.get("max_steps")
        n_steps = len(loader) if max_steps is None else min(len(loader), max_steps - epoch * len(loader))
        with progress_bar(n_steps, f"epoch {epoch + 1}/{self.epochs}", enabled=self.progress) as advance:
            for i, (x, y) in zip(range(n_steps), loader.epoch(epoch)):
                lr = lr_at(self.schedule, epoch, i, len(loader))
                method.set_lr(lr)
                if group.world > 1:
                    method.shard = distributed.shard(len(y), group)
                    x, y = method.shard.take(x), method.shard.take(y)
                losses = step(self.built, x, y, epoch + 1)
                if self.average is not None:
                    self.average.update(self.nets.f)
                if method.shard is not None:  # this rank's part of each batch's loss, summed over ranks below
                    losses = {k: v * method.shard_weight() for k, v in losses.items()}
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                if method.TRACE_KEY in losses and i % self.trace_every == 0:
                    self.trace(losses, epoch, i)
                advance()
        if group.world > 1:
            sums = _summed(sums)
        return _finite_means(method, sums, n_steps, epoch + 1), lr, n_steps

    def trace(self, losses: dict[str, torch.Tensor], epoch: int, batch: int) -> None:
        """One trace.jsonl row of the method's traced values (the group's, summed over ranks)."""
        if self.group.world > 1:
            losses = _summed(losses)
        if self.group.main:
            trace_row = _trace_row(self.method, losses, epoch, batch, len(self.loader))
            records.append_jsonl(self.out / records.TRACE, trace_row)
            self.curves.batch(trace_row)

    def select(self, epoch: int, best: dict) -> tuple[float, float, float, dict]:
        """Score the classifier the run delivers (f, or its weight average) on the selection split,
        clean and under the selection attack; keep it in best.pt when the protocol's rule says so.
        Returns the natural and robust accuracies, the score and the best epoch so far."""
        nets, average, group = self.nets, self.average, self.group
        scored = nets.f if average is None else average.module
        scored.eval()
        with contextlib.nullcontext() if self.autocast is None else self.autocast:
            nat = _accuracy(scored, self.x_sel, self.y_sel, None, self.eval_batch, group)
            rob = _accuracy(scored, self.x_sel, self.y_sel, self.select_attack, self.eval_batch, group)
        rule = self.config["selection"]["rule"]
        score = rob if rule == "rob" else nat + rob
        if rule == "final" or score > best["score"]:
            best = {"epoch": epoch + 1, "score": score}
            if group.main:
                delivered = nets.state() if average is None else {**nets.state(), "f": average.module.state_dict()}
                records.save_checkpoint(self.out / records.BEST, {"nets": delivered, "epoch": epoch + 1,
                                                                  "score": score})
        return nat, rob, score, best

    def record(self, row: dict, best: dict) -> None:
        """The method's health flags into the epoch's row (with their warnings), the row into
        history.jsonl, everything a resume needs into last.pt, and the epoch's line to the log."""
        epoch = row["epoch"]
        for key, value, warning in self.method.check_health(row["train"]):
            row[key] = value
            self.log(f"WARNING, epoch {epoch}: {warning}")
        if self.group.main:
            records.append_jsonl(self.out / records.HISTORY, row)
            self.curves.epoch(row, epoch * len(self.loader))
            averaged = {} if self.average is None else {"ema": self.average.state_dict()}
            records.save_checkpoint(self.out / records.LAST, {
                "nets": self.nets.state(), **self.method.state_dict(), **averaged, "rng": _rng_state(self.device),
                "epoch": epoch, "best": best})
        losses_txt = " ".join(f"{k} {v:.4f}" for k, v in row["train"].items())
        self.log(f"epoch {epoch}/{self.epochs}: {losses_txt} | nat {100 * row['nat_acc']:.2f} rob "
                 f"{100 * row['rob_acc']:.2f} (best epoch {best['epoch']}) | {row['images_per_s']:.0f} img/s")

    def finish(self, best: dict, began: float) -> dict:
        """The `done` summary: the selected epoch and, per health flag of the method, the epochs that raised it."""
        summary = {"best_epoch": best["epoch"], "best_score": best["score"], "epochs": self.epochs,
                   "selection": self.config["selection"]["rule"]}
        if self.group.main:
            history = records.read_jsonl(self.out / records.HISTORY)
            summary.update({f"{key}_epochs": [r["epoch"] for r in history if key in r]
                            for key in self.method.HEALTH_FLAGS})
            summary["seconds_this_session"] = time.time() - began
            records.write_json(self.out / records.DONE, summary)
        return summary


def train_group(config: dict, out: Path, nproc: int, settings: Settings | None = None, *,
                resume: bool = False) -> dict:
    """`train` as a group of `nproc` data-parallel processes on this host (`distributed.launch`),
    every rank with the same `settings`.

    Returns the summary rank 0 wrote (`done`), or {"done": False, ...} after a budget stopped it.
    """
    if distributed.from_env().world > 1:
        raise UsageError("--nproc starts its own group; under torchrun (WORLD_SIZE set) leave it out")
    out = Path(out)
    with RunLock(out) as lock, lock.lent():  # the ranks write under this process's lock and die with it
        claim(out, "run", create=False)
        check_writable(out, "run directory")
        distributed.launch(_train_rank, (config, out, settings or Settings(), resume), nproc)
    if (out / records.DONE).exists():
        return records.read_json(out / records.DONE)
    from cat_bench.costs import train_epochs

    return {"done": False, "epochs_trained": len(records.read_jsonl(out / records.HISTORY)),
            "epochs": math.ceil(train_epochs(config))}


def _train_rank(config: dict, out: Path, settings: Settings, resume: bool) -> dict:
    """One rank of `train_group` (a picklable entry point for the spawned processes); rank 0 logs to stderr."""
    return train(config, out, settings, resume=resume, log=lambda message: print(message, file=sys.stderr, flush=True))
