"""How one invocation runs its runs, as one value: never part of a run's identity.

A run's identity (its config, `cat_bench.options`) decides what it computes; `Settings` decides
where and how fast it computes it, when it stops, and what it shows: the device, the data root,
torch.compile, deterministic kernels, trackers, progress and the compute budgets. `cat-bench
train` and `cat-bench run` build it once from the command line (and the suite's `log` key) and
pass it whole to every executor: the local loop, `--jobs-per-gpu` worker processes, data-parallel
ranks and Slurm jobs, so none of them can drop a setting. It is frozen and picklable (a Slurm
job carries it in its pickle). `SlurmResources` is the same for what each Slurm job asks of the
cluster, declared once in SLURM_OPTIONS (flags and suite keys). Importing this module does not
import torch.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Any

from cat_bench.errors import UsageError
from cat_bench.options import RunOption


@dataclass(frozen=True)
class Settings:
    """The per-invocation settings (see the module docstring); the defaults are the command line's."""

    device: str | None = None  # cpu, cuda or cuda:N; None: CUDA when present, else the CPU
    data_root: str | None = None  # None: $CAT_BENCH_DATA, else a user cache folder (cat_bench.data)
    compile: str | None = None  # None (eager) or a torch.compile mode (presets.COMPILE_MODES)
    deterministic: bool = False  # on CUDA, kernels that give the same bits every time
    trackers: tuple[str, ...] = ()  # views of the records (cat_bench.tracking)
    progress: bool = True  # bars on a terminal, timed lines in piped output (cat_bench.progress)
    stop_after_epoch: int | None = None  # a compute budget: stop once this epoch is checkpointed
    stop_after_minutes: float | None = None  # a wall-clock budget, counted from `started`
    started: float = field(default_factory=time.time)  # when the wall-clock budget starts counting

    @property
    def deadline(self) -> float | None:
        """`stop_after_minutes` as a `time.time()` value, or None."""
        return None if self.stop_after_minutes is None else self.started + 60 * self.stop_after_minutes

    def restarted(self) -> Settings:
        """The same settings with the wall-clock budget counted from now (a Slurm job counts from its start)."""
        return dataclasses.replace(self, started=time.time())

    def quiet(self) -> Settings:
        """The same settings without progress output (worker processes, whose lines would interleave)."""
        return dataclasses.replace(self, progress=False)


def _partition(text: str) -> str:
    """A Slurm partition name (it goes into a generated job script, so nothing else may)."""
    if not re.fullmatch(r"[A-Za-z0-9_.,-]+", text):
        raise UsageError(f"--partition {text!r} is not a partition name; allowed: letters, digits and _ . , -")
    return text


def _memory(text: str) -> str:
    """Memory as sbatch's --mem takes it: a whole number with an optional unit K, M, G or T."""
    if not re.fullmatch(r"[1-9][0-9]*[KMGT]?", text):
        raise UsageError(f"--mem {text!r}; allowed: a whole number with an optional unit K, M, G or T, e.g. 32G")
    return text


SLURM_OPTIONS: tuple[RunOption, ...] = (
    RunOption("partition", str, None, "Slurm partition (default: the cluster's default); jobs ask for GPUs only "
              "where its nodes have them", check_value=_partition, example='"gpu"'),
    RunOption("time", int, 24 * 60, "time limit per job, minutes (default 1440)", positive=True, metavar="MINUTES"),
    RunOption("nodes_per_job", int, 1, "nodes per run, each with --gpus-per-job tasks (default 1)", positive=True,
              metavar="N"),
    RunOption("cpus_per_task", int, None, "CPUs per task (default: the partition's CPUs per node over its tasks, "
              "at most 8); each task trains with that many threads", positive=True, metavar="N"),
    RunOption("mem", str, None, "memory per node, as sbatch's --mem (default: the partition's)",
              check_value=_memory, example='"32G"'),
    RunOption("array_parallelism", int, 32, "job-array tasks running at once (default 32)", positive=True,
              metavar="N"),
)
SBATCH_KEY = re.compile(r"[a-z][a-z0-9_-]*")
# sbatch options the job script sets itself: from the option in the value, or submitit's own (None).
OWNED = {"partition": "--partition", "time": "--time", "nodes": "--nodes-per-job", "ntasks-per-node": "--gpus-per-job",
         "cpus-per-task": "--cpus-per-task", "mem": "--mem", "array": "--array-parallelism", "job-name": None,
         "output": None, "error": None, "open-mode": None, "signal": None, "wckey": None}
GPU_KEYS = ("gres", "gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket")  # a GPU request of the user's own


@dataclass(frozen=True)
class SlurmResources:
    """What each Slurm job asks for: SLURM_OPTIONS, the tasks of one run (`gpus_per_job`: one per GPU,
    or CPU ranks on a partition without GPUs), and any other sbatch option (`sbatch`, passed through)."""

    partition: str | None = None
    time: int = 24 * 60
    nodes_per_job: int = 1
    cpus_per_task: int | None = None
    mem: str | None = None
    array_parallelism: int = 32
    gpus_per_job: int = 1
    sbatch: tuple[tuple[str, str | bool], ...] = ()

    @property
    def asks_gpus_itself(self) -> bool:
        """Whether a pass-through option already requests GPUs (then no --gpus-per-node is added)."""
        return any(key.replace("_", "-") in GPU_KEYS for key, _ in self.sbatch)


def parse_sbatch(items: list[str], where: str = "--slurm") -> dict[str, str | bool]:
    """`--slurm account=lab qos=high exclusive` as {"account": "lab", "qos": "high", "exclusive": True}: sbatch
    options passed through as written; each value goes into the job script, so no control characters."""
    out: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        out[check_sbatch(key, value if sep else True, where)] = value if sep else True
    return out


def check_sbatch(key: str, value: Any, where: str) -> str:
    """The sbatch option name `key` (dashes), checked with its value; UsageError naming what is wrong."""
    if not isinstance(key, str) or not SBATCH_KEY.fullmatch(key):
        raise UsageError(f"{where} {key!r}: not an sbatch option name; allowed: lower-case letters, digits, - and _ "
                         f"(sbatch's long options without the dashes, e.g. account=lab)")
    name = key.replace("_", "-")
    if name in OWNED:
        instead = f"; give {OWNED[name]} instead" if OWNED[name] else " (the job's name is its run)"
        raise UsageError(f"{where} {key}: cat-bench sets this sbatch option itself{instead}")
    if value is not True and (not isinstance(value, str) or not value
                              or any(ord(c) < 32 or c == "\x7f" for c in value)):
        raise UsageError(f"{where} {key}={value!r}: allowed: a non-empty string without line breaks or control "
                         f"characters, or the option alone (e.g. --slurm exclusive)")
    return name


def slurm_resources(given: dict[str, Any], suite_table: dict[str, Any], sbatch: dict[str, str | bool],
                    gpus_per_job: int = 1) -> SlurmResources:
    """The resources of a submission: each option from the command line (`given`, None where not
    given), else the suite's [slurm] table, else its default; pass-through options from both, the
    command line's winning per key."""
    values = {o.name: o.check(given.get(o.name) if given.get(o.name) is not None else suite_table.get(o.name))
              for o in SLURM_OPTIONS}
    passed = {**parse_sbatch_table(suite_table.get("sbatch", {})), **sbatch}
    return SlurmResources(**values, gpus_per_job=gpus_per_job, sbatch=tuple(sorted(passed.items())))


def parse_sbatch_table(table: dict[str, Any], where: str = "[slurm.sbatch]") -> dict[str, str | bool]:
    """A suite's [slurm.sbatch] table (`account = "lab"`, `exclusive = true`), checked as `--slurm` is."""
    out: dict[str, str | bool] = {}
    for key, value in table.items():
        out[check_sbatch(key, value, where)] = value
    return out


def check_slurm_table(table: Any, where: str) -> dict[str, Any]:
    """A suite's [slurm] table: SLURM_OPTIONS keys with their types and an optional [slurm.sbatch]
    pass-through table; UsageError naming an unknown key or a bad value, and what is allowed."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: key 'slurm': expected a table ([slurm])")
    known = {o.name: o for o in SLURM_OPTIONS}
    for key, value in table.items():
        if key == "sbatch":
            if not isinstance(value, dict):
                raise UsageError(f"{where}: [slurm] key 'sbatch': expected a table, e.g. {{account = \"lab\"}}")
            parse_sbatch_table(value, f"{where}: [slurm.sbatch]")
        elif key not in known:
            raise UsageError(f"{where}: [slurm] unknown key {key!r}; allowed: {', '.join([*known, 'sbatch'])}")
        elif not known[key].suite_shape(value):
            raise UsageError(f"{where}: [slurm] key {key!r}: {value!r}; allowed: {known[key].allowed()}")
        else:
            known[key].check(value)
    return table
