"""A suite on a Slurm cluster: one job-array task per unfinished run, through submitit.

Each task runs `SlurmJob`: the run's training and evaluation (`orchestrate.run_job`) with the
invocation's `Settings`, whole, under the run's lock; on preemption or timeout submitit requeues it
and it resumes from its last checkpoint. A job of several tasks trains the run as one
data-parallel group. Jobs ask for GPUs only on a partition whose nodes have them (`sinfo`), so a
CPU partition works as it is. Each task is renamed after its run (`scontrol update`), so `squeue`
tells them apart, and `RESULTS/slurm/jobs.jsonl` keeps run, job id and log path for `cat-bench
status`, which asks the queue (`queue_states`). sbatch's refusals are one-line UsageErrors.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cat_bench import distributed, records
from cat_bench.errors import UsageError
from cat_bench.lazy import torch
from cat_bench.orchestrate import run_dir, run_job
from cat_bench.settings import Settings, SlurmResources
from cat_bench.suite import RunSpec
from cat_bench.train import train

JOBS = "jobs.jsonl"  # RESULTS/slurm/jobs.jsonl: one line per submitted run, append-only
DEFAULT_CPUS = 8  # at most this many CPUs per task unless --cpus-per-task says more
FAILED = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
          "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT")


class SlurmJob:
    """A submitit job running one RunSpec with the invocation's settings; on preemption or timeout it
    requeues itself and resumes.

    A job of several tasks (GPUs, or CPU ranks, possibly on several nodes) trains the run as one
    data-parallel group: every task is a rank; rank 0 holds the run's lock and evaluates once
    training is done. The wall-clock budget (`--stop-after-minutes`) counts from the job's start.
    """

    def __init__(self, results: Path, spec: RunSpec, settings: Settings):
        self.results, self.spec, self.settings = Path(results), spec, settings

    def __call__(self) -> str:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))  # the task's CPUs, not the node's
        settings = self.settings.restarted()
        if not distributed.from_env().main:
            train(self.spec.config, run_dir(self.results, self.spec), settings.quiet(), resume=True)
            return "rank"
        return run_job(self.results, self.spec, settings, log=lambda m: print(m, flush=True), wait=True)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on preemption/timeout: requeue the same job (training resumes from last.pt)."""
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmJob(self.results, self.spec, self.settings))


@dataclass(frozen=True)
class Partition:
    """What `sinfo` says of a partition's nodes: GPUs and CPUs per node (the smallest node's)."""

    name: str
    gpus: int
    cpus: int


def _command(args: list[str]) -> str:
    """A Slurm command's output; UsageError with its own words when it is missing or fails."""
    if shutil.which(args[0]) is None:
        raise UsageError(f"{args[0]} not found: --executor slurm runs on a Slurm login node (or start the one-node "
                         f"cluster of scripts/slurm_cluster.sh, docs/distributed.md)")
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"{' '.join(args[:2])} failed: {one_line(proc.stderr or proc.stdout)}")
    return proc.stdout


def one_line(text: str) -> str:
    """A Slurm command's message as one line: its lines joined, the repeated 'sbatch: error: ' dropped."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(line.split("error: ", 1)[-1] if ": error: " in line else line for line in lines) or "no message"


def _gpus(gres: str) -> int:
    """GPUs per node in sinfo's %G ('gpu:4', 'gpu:a100:8(S:0-1)', '(null)')."""
    total = 0
    for entry in gres.split(","):
        parts = entry.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def partition(name: str | None) -> Partition | None:
    """The named partition (None: the cluster's default) as sinfo sees it, or None when sinfo does not
    know it (sbatch then refuses with its own words)."""
    rows = [line.split("|") for line in _command(["sinfo", "-h", "-o", "%P|%G|%c"]).splitlines() if line.strip()]
    found = [row for row in rows if (row[0].rstrip("*") == name if name else row[0].endswith("*"))]
    if not found:
        return None
    cpus = [int(r[2].rstrip("+")) for r in found if r[2].rstrip("+").isdigit()]
    return Partition(found[0][0].rstrip("*"), min(_gpus(r[1]) for r in found), min(cpus, default=DEFAULT_CPUS))


def parameters(res: SlurmResources, part: Partition | None, job_name: str) -> dict:
    """submitit's parameters for `res` on `part`: GPUs only where the partition has them (and the
    pass-through asks for none itself), CPUs per task from --cpus-per-task or the node's share."""
    tasks = res.gpus_per_job
    cpus = res.cpus_per_task or max(1, min(DEFAULT_CPUS, (part.cpus if part else DEFAULT_CPUS * tasks) // tasks))
    params = dict(timeout_min=res.time, nodes=res.nodes_per_job, tasks_per_node=tasks, cpus_per_task=cpus,
                  slurm_array_parallelism=res.array_parallelism, slurm_job_name=job_name,
                  slurm_additional_parameters={"requeue": True, **dict(res.sbatch)})
    if part is not None and part.gpus > 0 and not res.asks_gpus_itself:
        params["gpus_per_node"] = tasks
    if res.partition:
        params["slurm_partition"] = res.partition
    if res.mem:
        params["slurm_mem"] = res.mem
    return params


def describe(res: SlurmResources, part: Partition | None, params: dict) -> str:
    """What each job asks for, in words (printed before submitting)."""
    where = f"partition {part.name}" if part else f"partition {res.partition or '(default)'} (unknown to sinfo)"
    gpus = (f"{params['gpus_per_node']} GPU(s) per node" if "gpus_per_node" in params
            else "its own GPU request" if res.asks_gpus_itself
            else "no GPU (the partition has none)" if part else "no GPU")
    extra = " ".join(f"--{k}" + ("" if v is True else f"={v}") for k, v in res.sbatch)
    return (f"{where}: each run {res.nodes_per_job} node(s) x {res.gpus_per_job} task(s), {gpus}, "
            f"{params['cpus_per_task']} CPU(s) per task{', mem ' + res.mem if res.mem else ''}, "
            f"{res.time} minutes{', ' + extra if extra else ''}")


def check_script_path(results: Path) -> None:
    """The results path goes into the job script (its log paths): no line breaks or control characters."""
    if any(ord(c) < 32 or c == "\x7f" for c in str(Path(results).resolve())):
        raise UsageError(f"--results {str(results)!r} contains a control character (a line break?), which would end "
                         f"a line of the Slurm job script; choose a plain path")


def submit(results: Path, specs: Sequence[RunSpec], settings: Settings, res: SlurmResources, *,
           label: str = "cat-bench", executor=None, log=print) -> list:
    """Submit one job-array task per run; returns submitit's jobs. Each task is renamed after its run
    and recorded in RESULTS/slurm/jobs.jsonl. A refusal of sbatch is a one-line UsageError and
    leaves nothing behind (its submission folder is removed). `executor`: a submitit executor to
    use instead (tests: submitit's local one), with its own parameters."""
    import submitit

    results = Path(results)
    check_script_path(results)
    if not specs:
        return []
    folder = results / "slurm" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if executor is None:
        part = partition(res.partition)
        params = parameters(res, part, specs[0].name if len(specs) == 1 else label)
        log(f"Slurm, {describe(res, part, params)}")
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
        executor.update_parameters(**params)
    try:  # submitit prints sbatch's refusal itself; the UsageError below says it once, in one line
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            jobs = [executor.submit(SlurmJob(results, spec, settings)) for spec in specs]
    except submitit.core.utils.FailedJobError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise UsageError(f"sbatch refused the jobs: {one_line(str(err))}") from None
    (results / "slurm").mkdir(parents=True, exist_ok=True)
    for spec, job in zip(specs, jobs):
        _name(job, spec, len(specs), log)
        records.append_jsonl(results / "slurm" / JOBS, {"run": spec.name, "job": str(job.job_id),
                                                        "log": str(job.paths.stdout), "err": str(job.paths.stderr),
                                                        "submitted": time.time()})
    return jobs


def _name(job, spec: RunSpec, n_jobs: int, log) -> None:
    """Rename an array task after its run (a single job was submitted with that name)."""
    if n_jobs == 1 or shutil.which("scontrol") is None:
        return
    proc = subprocess.run(["scontrol", "update", f"JobId={job.job_id}", f"JobName={spec.name}"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        log(f"note: job {job.job_id} keeps its array's name ({one_line(proc.stderr)}); it runs {spec.name}")


def submitted(results: Path) -> dict[str, dict]:
    """The last submission of each run (RESULTS/slurm/jobs.jsonl), by run name."""
    path = Path(results) / "slurm" / JOBS
    return {row["run"]: row for row in records.read_jsonl(path)} if path.is_file() else {}


def queue_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Each job's Slurm state, with the reason of a pending one ('PENDING (Resources)'): from squeue
    while the controller knows it (one array task per line), else `scontrol show job`, else 'gone'
    (finished long ago: Slurm forgets a job MinJobAge seconds after it ends)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    states: dict[str, str] = {}
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "--me", "-o", "%i|%T|%r"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        states[job] = f"{state} ({reason})" if state == "PENDING" and reason not in ("", "None") else state
    return {job: states.get(job) or _shown_state(job) for job in job_ids}


def _shown_state(job: str) -> str:
    proc = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    fields = dict(item.split("=", 1) for item in proc.stdout.split() if "=" in item)
    return fields.get("JobState", "gone") if proc.returncode == 0 else "gone"


def active(state: str) -> bool:
    """Whether a job in this state may still run (so its run is not submitted again)."""
    return state.split()[0] in ACTIVE


def died(state: str, record_state: str) -> bool:
    """Whether a run's job ended without finishing it: a failing Slurm state, or gone from the
    controller while the run has no record at all ('todo')."""
    name = state.split()[0]
    return name in FAILED or (name == "gone" and record_state == "todo")
