"""Run a suite's jobs: train each run (resuming), then evaluate it (resuming), never twice.

A job is one `RunSpec`: its directory is `RESULTS/runs/<method>-<dataset>-<config hash>`. A job is
finished when the run has its `done` marker and `eval.json` holds every attack the suite asks
for; finished jobs are skipped, unfinished ones continue from their last checkpoint and their
last finished attack. A per-run lock file (`<run>.lock`, an OS file lock released when the
process dies, even by SIGKILL; cat_bench.rundir) makes concurrent `cat-bench run` processes on one
results directory share the work: a process skips runs another holds, then waits for them at the
end. A run that cannot be used fails alone (`unusable`, failed.json); the others go on.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cat_bench import distributed, records
from cat_bench.data import dataset_info
from cat_bench.errors import CorruptRecord, Diverged, GroupFailed, RunBusy, UsageError
from cat_bench.evaluate import evaluate, evaluations
from cat_bench.lazy import torch
from cat_bench.networks import resolve_device
from cat_bench.progress import progress_bar
from cat_bench.rundir import RunLock, owner
from cat_bench.settings import Settings
from cat_bench.suite import RunSpec
from cat_bench.train import train, train_group

RUNS = "runs"
OUTCOME_RANK = ("done", "failed", "stopped", "skipped", "busy")  # what a run's outcome is when workers differ


def run_dir(results: Path, spec: RunSpec) -> Path:
    """Where a run lives inside a results directory: runs/NAME, or the folder `train --out` chose."""
    return Path(results) / (spec.folder or Path(RUNS) / spec.name)


def state(results: Path, spec: RunSpec) -> str:
    """'done' (trained and fully evaluated), 'failed' (unusable as it is on disk: `unusable` says why;
    failed.json, when there is one, also says how to fix it), 'partial' (something on disk) or 'todo'."""
    out = run_dir(results, spec)
    if not out.exists() and not out.is_symlink():
        return "todo"
    if unusable(results, spec) is not None:
        return "failed"
    if (out / records.DONE).exists() and (out / records.EVAL).exists():
        info = dataset_info(spec.config["dataset"])
        n_wanted = min(spec.n_examples or info.n_test, info.n_test)
        for ev in evaluations(records.read_json(out / records.EVAL)):  # the suite's, on top or beside it
            key = ev.get("key", {})
            if (set(spec.attacks) <= set(ev.get("attacks", {})) and key.get("n_examples") == n_wanted
                    and abs(key.get("eps", -1) - info.test_eps) < 1e-9):
                return "done"
    return "partial"


def _outside(results: Path, spec: RunSpec) -> str | None:
    """Why cat-bench must not write the run's path at all: a file there, or a link out of the results."""
    out = run_dir(results, spec)
    if out.is_symlink() and not out.resolve().is_relative_to((Path(results) / RUNS).resolve()):
        return f"{out} is a link to {out.resolve()}, outside the results directory {results}"
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a run directory"
    return None


def unusable(results: Path, spec: RunSpec) -> str | None:
    """Why the run cannot be used as it is on disk (the first problem found), or None: a path cat-bench
    must not write, a failed.json, a folder of someone else's files, or a record that cannot be read
    or whose identity does not hash to the run's name (records.verify_run)."""
    out = run_dir(results, spec)
    reason = _outside(results, spec)
    if reason is None and (out / records.FAILED).exists():
        return _failed_record(out, spec)["reason"]
    if reason is None and out.is_dir() and any(out.iterdir()) and owner(out) != "run":
        reason = f"{out} holds files cat-bench did not write ({', '.join(sorted(os.listdir(out))[:5])})"
    if reason is None:
        try:
            records.verify_run(out)
        except CorruptRecord as err:
            reason = str(err)
    return reason


def failure(results: Path, spec: RunSpec) -> dict:
    """A failed run's reason and fix: its failed.json, or what `unusable` finds when it has none."""
    out = run_dir(results, spec)
    if _outside(results, spec) is None and (out / records.FAILED).exists():
        return _failed_record(out, spec)
    return {"reason": unusable(results, spec) or "unknown (see the log)", "fix": _retrain(out, spec)}


def _failed_record(out: Path, spec: RunSpec) -> dict:
    try:
        record = records.read_json(out / records.FAILED)
        return {"reason": str(record["reason"]), "fix": str(record["fix"])}
    except (CorruptRecord, KeyError) as err:
        return {"reason": f"unreadable failure record: {err}", "fix": _retrain(out, spec)}


def _retrain(out: Path, spec: RunSpec) -> str:
    return f"rerun the suite with --retrain {spec.name} (moves {out} aside and trains the run from scratch)"


def move_aside(results: Path, spec: RunSpec) -> Path | None:
    """`run --retrain`: under the run's lock, rename its directory (or whatever is at its path) to
    NAME.old-TIMESTAMP, so the suite trains it from scratch; nothing is deleted. Returns the new path."""
    out = run_dir(results, spec)
    if not out.exists() and not out.is_symlink():
        return None
    with RunLock(out):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = out.with_name(f"{out.name}.old-{stamp}")
        n = 1
        while aside.exists() or aside.is_symlink():
            n += 1
            aside = out.with_name(f"{out.name}.old-{stamp}-{n}")
        os.rename(out, aside)
    return aside


def _fix(err: Exception, out: Path, spec: RunSpec) -> str:
    """What to do about a run that failed with `err` (a fix that works from where the run stands)."""
    retrain = _retrain(out, spec)
    if isinstance(err, GroupFailed):
        return "rerun the suite: the run resumes from its last finished epoch"
    if isinstance(err, Diverged):
        return ("change the settings that make it diverge in the suite (the same settings diverge again: "
                "they are the run's identity), then rerun the suite")
    if isinstance(err, OSError):
        return f"free disk space or make {out} writable, then rerun the suite: the run resumes from its last checkpoint"
    if isinstance(err, CorruptRecord):
        return (f"remove the corrupt file if it is checkpoints/last.pt (training restarts from epoch 0) or "
                f"eval.json (evaluation reruns); otherwise, or to start again: {retrain}")
    return f"{retrain}; or fix what the message says and rerun the suite"


def _record_failure(out: Path, err: Exception, fix: str, log: Callable[[str], None]) -> None:
    """failed.json with the reason and the fix (when the disk takes it: a full disk may not)."""
    reason = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.filename else str(err)
    try:
        records.write_json(out / records.FAILED, {"reason": reason, "fix": fix, "time": time.time()})
    except OSError as write_err:
        log(f"could not record the failure in {out / records.FAILED}: {write_err}")
    log(f"run {out.name} FAILED: {reason}; {fix}")


def _failed_since(out: Path, since: float) -> bool:
    """Whether the run's failed.json was written at or after `since`."""
    try:
        return records.read_json(out / records.FAILED).get("time", 0) >= since
    except (UsageError, OSError, AttributeError):  # none, or not a record this check can read
        return False


def run_job(results: Path, spec: RunSpec, settings: Settings, *, log: Callable[[str], None] = print,
            wait: bool = False, nproc: int = 1) -> str:
    """Train and evaluate one run under its lock, as `settings` say (cat_bench.settings); returns
    'done', 'skipped' (already done), 'busy', 'stopped' (a compute budget ended it: trained up to
    `stop_after_epoch`, or the deadline passed; not evaluated yet) or 'failed'. Past the deadline a
    run is neither started nor evaluated; the next call continues it.

    `nproc` > 1 trains the run as one data-parallel group of that many processes on this host
    (`train_group`); evaluation then runs here. Under a group already set up (a multi-task Slurm
    job) this process is its rank 0: `train` joins the group.

    'failed': the run cannot be used (a corrupt or edited record, a missing checkpoint, someone
    else's files in its folder), a rank of its training group failed (GroupFailed), its loss
    diverged, or a write failed (a full disk). failed.json keeps the reason and a fix that works
    (`_fix`), and the suite goes on with its other runs. The next attempt starts by removing
    failed.json, so a fixed run simply continues. A finished run is skipped without the lock (a
    read-only results directory of finished runs answers); a path cat-bench must not write (a file,
    a link out of the results) fails without a write.
    """
    if state(results, spec) == "done":
        return "skipped"
    out = run_dir(results, spec)
    outside = _outside(results, spec)
    if outside is not None:
        log(f"run {spec.name} FAILED: {outside}; {_fix(UsageError(outside), out, spec)}")
        return "failed"
    lock = RunLock(out)
    try:
        lock.acquire()
    except RunBusy as err:
        if not wait:
            log(f"run {spec.name} is held by another process ({err}); coming back to it")
            return "busy"
        log(f"waiting for run {spec.name}: another process holds it (lock {lock.path})")
        waited_from = time.time()
        lock.acquire(wait=True)
        if _failed_since(out, waited_from):  # the holder just failed it: not retried here
            lock.release()
            return "failed"
    try:
        (out / records.FAILED).unlink(missing_ok=True)
        if state(results, spec) == "done":
            return "skipped"
        if _out_of_time(settings):
            return "stopped"
        summary = (train_group(spec.config, out, nproc, settings, resume=True) if nproc > 1
                   else train(spec.config, out, settings, resume=True, log=log))
        if not summary.get("done", True) or _out_of_time(settings):
            return "stopped"
        evaluate(out, ",".join(spec.attacks), n_examples=spec.n_examples, data_root=settings.data_root,
                 device=resolve_device(settings.device), progress=settings.progress, log=log)
        return "done"
    except (UsageError, GroupFailed, Diverged, OSError) as err:
        _record_failure(out, err, _fix(err, out, spec), log)
        return "failed"
    finally:
        lock.release()


def _out_of_time(settings: Settings) -> bool:
    return settings.deadline is not None and time.time() >= settings.deadline


def run_local(results: Path, specs: Sequence[RunSpec], settings: Settings, *, log: Callable[[str], None] = print,
              nproc: int = 1) -> dict[str, str]:
    """Run jobs one after another (each on `nproc` data-parallel processes); runs held by another
    process are waited for last, unless the deadline has passed."""
    outcome: dict[str, str] = {}
    with progress_bar(len(specs), "suite runs", enabled=settings.progress) as advance:
        for wait in (False, True):
            for spec in specs:
                if outcome.get(spec.name) in ("done", "skipped", "stopped", "failed"):
                    continue
                if wait and _out_of_time(settings):
                    continue  # another process holds it; waiting would outlast the budget
                log(f"run {spec.name} ({spec.config['method']}, {', '.join(spec.labels) or 'no label'})")
                outcome[spec.name] = run_job(results, spec, settings, log=log, wait=wait, nproc=nproc)
                if outcome[spec.name] != "busy":
                    advance()
    return outcome


def worker_devices(device: torch.device, jobs_per_gpu: int) -> list[str]:
    """The devices of a suite's worker processes: `jobs_per_gpu` per visible GPU (only `device` when it
    names one, e.g. cuda:1), or that many CPU workers on CPU."""
    if device.type == "cuda" and device.index is None:
        gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        gpus = [str(device)]
    return [dev for dev in gpus for _ in range(jobs_per_gpu)]


def _worker(results: Path, specs: Sequence[RunSpec], settings: Settings, label: str, threads: int) -> dict[str, str]:
    """One worker process: the same loop as `run_local` on its device; the locks share the work out."""
    if "OMP_NUM_THREADS" not in os.environ:  # workers on one host share its cores
        torch.set_num_threads(threads)
    return run_local(results, specs, settings, log=lambda m: print(f"[{label}] {m}", file=sys.stderr, flush=True))


def run_parallel(results: Path, specs: Sequence[RunSpec], devices: Sequence[str], settings: Settings) -> dict[str, str]:
    """One worker process per entry of `devices` (a GPU named K times packs K runs on it), all walking
    the job list (rotated) under the per-run locks; each run is trained by exactly one of them. Each
    worker runs with `settings` on its own device, without progress bars (their lines would
    interleave). The workers die with this process, so a killed launcher never leaves them
    training and holding locks."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    with ctx.Pool(len(devices), initializer=distributed.die_with_parent, initargs=(os.getpid(),)) as pool:
        parts = [pool.apply_async(_worker, (results, list(specs[i:]) + list(specs[:i]),
                                            dataclasses.replace(settings, device=dev, progress=False),
                                            f"{dev} #{i}", threads))
                 for i, dev in enumerate(devices)]
        outcome: dict[str, str] = {}
        for part in parts:
            for name, result in part.get().items():
                if name not in outcome or OUTCOME_RANK.index(result) < OUTCOME_RANK.index(outcome[name]):
                    outcome[name] = result
    return outcome
