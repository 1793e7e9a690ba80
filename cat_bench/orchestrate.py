"""Run a suite's jobs: train each run (resuming), then evaluate it (resuming), never twice.

A job is one `RunSpec`: its directory is `RESULTS/runs/<method>-<dataset>-<config hash>`. A job is
finished when the run has its `done` marker and `eval.json` holds every attack the suite asks
for; finished jobs are skipped, unfinished ones continue from their last checkpoint and their
last finished attack. A per-run lock file (`<run>.lock`, an OS file lock released when the
process dies, even by SIGKILL) makes concurrent `cat-bench run` processes on one results
directory share the work: a process skips runs another holds, then waits for them at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from cat_bench import distributed, records
from cat_bench.data import dataset_info
from cat_bench.errors import CorruptRecord, GroupFailed
from cat_bench.evaluate import evaluate
from cat_bench.lazy import torch
from cat_bench.progress import progress_bar
from cat_bench.suite import RunSpec
from cat_bench.train import train, train_group

RUNS = "runs"
OUTCOME_RANK = ("done", "failed", "stopped", "skipped", "busy")  # what a run's outcome is when workers differ


def run_dir(results: Path, spec: RunSpec) -> Path:
    """Where a run lives inside a results directory."""
    return Path(results) / RUNS / spec.name


def state(results: Path, spec: RunSpec) -> str:
    """'done' (trained and fully evaluated), 'failed' (the last attempt hit a corrupt record: failed.json says
    why and how to fix it), 'partial' (something on disk) or 'todo'."""
    out = run_dir(results, spec)
    if not out.exists():
        return "todo"
    if (out / records.FAILED).exists():
        return "failed"
    if (out / records.DONE).exists() and (out / records.EVAL).exists():
        ev = records.read_json(out / records.EVAL)
        info = dataset_info(spec.config["dataset"])
        key = ev.get("key", {})
        n_wanted = spec.n_examples or info.n_test
        if (set(spec.attacks) <= set(ev.get("attacks", {})) and key.get("n_examples") == min(n_wanted, info.n_test)
                and abs(key.get("eps", -1) - info.test_eps) < 1e-9):
            return "done"
    return "partial"


def _lock(results: Path, spec: RunSpec) -> FileLock:
    path = run_dir(results, spec).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def _failed_since(out: Path, since: float) -> bool:
    """Whether the run's failed.json was written at or after `since`."""
    path = out / records.FAILED
    return path.exists() and records.read_json(path).get("time", 0) >= since


def run_job(results: Path, spec: RunSpec, *, device: torch.device, data_root=None, progress: bool = True,
            log: Callable[[str], None] = print, wait: bool = False, stop_after_epoch: int | None = None,
            deadline: float | None = None, compile: str | None = None, trackers: list[str] | None = None,
            nproc: int = 1) -> str:
    """Train and evaluate one run under its lock; returns 'done', 'skipped' (already done), 'busy',
    'stopped' (a compute budget ended it: trained up to `stop_after_epoch`, or `deadline` (a
    `time.time()` value) passed; not evaluated yet) or 'failed'. Past the deadline a run is
    neither started nor evaluated; the next call continues it.

    `nproc` > 1 trains the run as one data-parallel group of that many processes on this host
    (`train_group`); evaluation then runs here. Under a group already set up (a multi-task Slurm
    job) this process is its rank 0: `train` joins the group.

    'failed': a record or checkpoint of this run is corrupt (CorruptRecord), or a rank of its
    training group failed (GroupFailed); failed.json keeps the reason and the fix, and the suite goes on with its other runs. The next attempt starts by
    removing failed.json, so a fixed run simply continues.
    """
    lock = _lock(results, spec)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            log(f"run {spec.name} is held by another process (lock {lock.lock_file}); coming back to it")
            return "busy"
        log(f"waiting for run {spec.name}: another process holds it (lock {lock.lock_file})")
        waited_from = time.time()
        lock.acquire(timeout=-1)
        if _failed_since(run_dir(results, spec), waited_from):  # the holder just failed it: not retried here
            lock.release()
            return "failed"
    out = run_dir(results, spec)
    try:
        (out / records.FAILED).unlink(missing_ok=True)
        if state(results, spec) == "done":
            return "skipped"
        if deadline is not None and time.time() >= deadline:
            return "stopped"
        options = dict(resume=True, data_root=data_root, device=device, progress=progress,
                       stop_after_epoch=stop_after_epoch, deadline=deadline, compile=compile, trackers=trackers)
        summary = (train_group(spec.config, out, nproc, **options) if nproc > 1
                   else train(spec.config, out, log=log, **options))
        if not summary.get("done", True) or (deadline is not None and time.time() >= deadline):
            return "stopped"
        evaluate(out, ",".join(spec.attacks), n_examples=spec.n_examples, data_root=data_root, device=device,
                 progress=progress, log=log)
        return "done"
    except (CorruptRecord, GroupFailed) as err:
        fix = ("rerun the suite: the run resumes from its last finished epoch" if isinstance(err, GroupFailed) else
               f"remove the corrupt file (a corrupt checkpoints/last.pt: training restarts from epoch 0) or the "
               f"whole run directory {out} to train it again from scratch, then rerun the suite")
        records.write_json(out / records.FAILED, {"reason": str(err), "fix": fix, "time": time.time()})
        log(f"run {spec.name} FAILED: {err}; {fix}")
        return "failed"
    finally:
        lock.release()


def run_local(results: Path, specs: Sequence[RunSpec], *, device: torch.device, data_root=None,
              progress: bool = True, log: Callable[[str], None] = print,
              stop_after_epoch: int | None = None, deadline: float | None = None, compile: str | None = None,
              trackers: list[str] | None = None, nproc: int = 1) -> dict[str, str]:
    """Run jobs one after another (each on `nproc` data-parallel processes); runs held by another
    process are waited for last, unless the deadline has passed."""
    outcome: dict[str, str] = {}
    with progress_bar(len(specs), "suite runs", enabled=progress) as advance:
        for wait in (False, True):
            for spec in specs:
                if outcome.get(spec.name) in ("done", "skipped", "stopped", "failed"):
                    continue
                if wait and deadline is not None and time.time() >= deadline:
                    continue  # another process holds it; waiting would outlast the budget
                log(f"run {spec.name} ({spec.config['method']}, {', '.join(spec.labels) or 'no label'})")
                outcome[spec.name] = run_job(results, spec, device=device, data_root=data_root, progress=progress,
                                             log=log, wait=wait, stop_after_epoch=stop_after_epoch,
                                             deadline=deadline, compile=compile, trackers=trackers, nproc=nproc)
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


def _worker(results: Path, specs: Sequence[RunSpec], device: str, label: str, threads: int, data_root,
            options: dict) -> dict[str, str]:
    """One worker process: the same loop as `run_local` on its device; the locks share the work out."""
    if "OMP_NUM_THREADS" not in os.environ:  # workers on one host share its cores
        torch.set_num_threads(threads)
    return run_local(results, specs, device=torch.device(device), data_root=data_root, progress=False,
                     log=lambda m: print(f"[{label}] {m}", file=sys.stderr, flush=True), **options)


def run_parallel(results: Path, specs: Sequence[RunSpec], devices: Sequence[str], *, data_root=None,
                 **options) -> dict[str, str]:
    """One worker process per entry of `devices` (a GPU named K times packs K runs on it), all walking
    the job list (rotated) under the per-run locks; each run is trained by exactly one of them.
    `options`: run_local's budget, speed and tracker options (stop_after_epoch, deadline, compile, trackers)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    with ctx.Pool(len(devices)) as pool:
        parts = [pool.apply_async(_worker, (results, list(specs[i:]) + list(specs[:i]), dev, f"{dev} #{i}",
                                            threads, data_root, options))
                 for i, dev in enumerate(devices)]
        outcome: dict[str, str] = {}
        for part in parts:
            for name, result in part.get().items():
                if name not in outcome or OUTCOME_RANK.index(result) < OUTCOME_RANK.index(outcome[name]):
                    outcome[name] = result
    return outcome


class SlurmJob:
    """A submitit job running one RunSpec; on preemption or timeout it requeues itself and resumes.

    A job of several tasks (GPUs, possibly on several nodes) trains the run as one data-parallel
    group: every task is a rank; rank 0 holds the run's lock, and evaluates once training is done.
    """

    def __init__(self, results: Path, spec: RunSpec, data_root=None):
        self.results, self.spec, self.data_root = Path(results), spec, data_root

    def __call__(self) -> str:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not distributed.from_env().main:
            train(self.spec.config, run_dir(self.results, self.spec), resume=True, data_root=self.data_root,
                  device=device, progress=False)
            return "rank"
        return run_job(self.results, self.spec, device=device, data_root=self.data_root, progress=False,
                       log=lambda m: print(m, flush=True), wait=True)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on preemption/timeout: requeue the same job (training resumes from last.pt)."""
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmJob(self.results, self.spec, self.data_root))


def submit_slurm(results: Path, specs: Sequence[RunSpec], *, executor=None, partition: str | None = None,
                 time_min: int = 24 * 60, gpus_per_job: int = 1, nodes_per_job: int = 1, array_parallelism: int = 32,
                 data_root=None) -> list:
    """Submit one Slurm job-array task per unfinished run through submitit; returns the jobs.

    A job holds `nodes_per_job` nodes of `gpus_per_job` GPUs, one task per GPU: above one task,
    the run trains as one data-parallel group (SlurmJob).
    """
    import submitit

    if executor is None:
        executor = submitit.AutoExecutor(folder=Path(results) / "slurm" / "%j")
        params = dict(timeout_min=time_min, nodes=nodes_per_job, gpus_per_node=gpus_per_job,
                      tasks_per_node=gpus_per_job, slurm_array_parallelism=array_parallelism,
                      cpus_per_task=8, slurm_additional_parameters={"requeue": True})
        if partition:
            params["slurm_partition"] = partition
        executor.update_parameters(**params)
    jobs = []
    with executor.batch():
        for spec in specs:
            jobs.append(executor.submit(SlurmJob(results, spec, data_root)))
    return jobs
