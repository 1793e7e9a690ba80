"""Data-parallel training of one run across processes (torch.distributed): the group, its launch, its sums.

The math is the single-process run's. Every rank holds the same state (weights, optimisers, RNG),
reads the same global batch and keeps its rows (`Shard`); random starts are drawn for the whole
global batch and sliced, so N ranks draw what one process draws; after each backward the
gradients are summed across ranks, each weighted by its share of the batch when the loss is a
mean over rows and as it is when the loss is a sum (`Method.reduction`), so the step is the
global batch's. BatchNorm is synchronised (SyncBatchNorm,
CUDA only). Rank 0 writes every record.

Why not DistributedDataParallel: its reducer expects each train-mode forward to be followed by a
backward into the weights, but PGD differentiates with respect to the input only, and CAT's g
step takes `torch.autograd.grad` on g's weights. One flattened all-reduce per optimiser step is
what DDP's reducer computes, without overlapping it with the backward.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from cat_bench.errors import CorruptRecord, Diverged, GroupFailed, UsageError
from cat_bench.lazy import torch


@dataclass(frozen=True)
class Group:
    """This process's place in a training group (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes records, checkpoints and logs."""
        return self.rank == 0


@dataclass(frozen=True)
class Shard:
    """This rank's rows [start, start + n) of a global batch of `n_global` rows."""

    start: int
    n: int
    n_global: int

    @property
    def weight(self) -> float:
        """Its share of the batch: the weight of a mean loss's gradient in the global sum."""
        return self.n / self.n_global

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        return batch[self.start:self.start + self.n]


def from_env() -> Group:
    """The group torchrun, Slurm (via submitit) or `launch` describes in RANK/WORLD_SIZE/LOCAL_RANK; else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group()
    return Group(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(group: Group, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) unless it is one process or already joined."""
    if group.world == 1 or torch.distributed.is_initialized():
        return
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         rank=group.rank, world_size=group.world)


def shard(n_global: int, group: Group) -> Shard:
    """The rows of a global batch this rank trains on (torch.tensor_split's: sizes differ by at most 1)."""
    base, extra = divmod(n_global, group.world)
    start = group.rank * base + min(group.rank, extra)
    return Shard(start, base + (group.rank < extra), n_global)


def sum_weighted(tensors: list[torch.Tensor], weight: float) -> None:
    """In place: each tensor becomes sum over ranks of weight_r * tensor_r (one flattened all-reduce)."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors]).mul_(weight)
    torch.distributed.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def free_port() -> int:
    """A TCP port free on this host now, for a single-node group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent (the launcher) dies, so a killed launcher
    never leaves ranks writing a run whose lock it held (Linux prctl PR_SET_PDEATHSIG; elsewhere a
    thread polls the parent's pid)."""
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _entry(local_rank: int, world: int, port: int, fn, args, parent: int) -> None:
    """One spawned rank: its environment (as torchrun sets it), fn, then leave the group."""
    die_with_parent(parent)
    os.environ.update(RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if "OMP_NUM_THREADS" not in os.environ:  # ranks on one host share its cores (torchrun gives each 1 thread)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        fn(*args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch(fn, args: tuple, nproc: int) -> None:
    """Run fn(*args) in `nproc` processes on this host as one group. A rank that fails or is killed
    stops the others and raises GroupFailed naming it (rerun with --resume to continue); a rank's
    UsageError, CorruptRecord or Diverged is raised here as it was. The ranks die with this process."""
    if nproc < 1:
        raise UsageError(f"--nproc {nproc!r} must be a positive integer")
    import torch.multiprocessing as mp

    rerun = "rerun the same command with --resume to continue from the last finished epoch"
    try:
        mp.start_processes(_entry, args=(nproc, free_port(), fn, args, os.getpid()), nprocs=nproc,
                           start_method="spawn")
    except mp.ProcessExitedException as err:
        raise GroupFailed(f"training rank {err.error_index} of {nproc} exited with code {err.exit_code} and the "
                          f"group stopped; {rerun}") from None
    except mp.ProcessRaisedException as err:
        # The rank's traceback ends "module.Error: message"; a cat-bench error keeps its type and its fix.
        kind, _, message = str(err).strip().splitlines()[-1].partition(": ")
        known = {"cat_bench.errors.UsageError": UsageError, "cat_bench.errors.CorruptRecord": CorruptRecord,
                 "cat_bench.errors.Diverged": Diverged}
        if kind in known:
            raise known[kind](message) from None
        raise GroupFailed(f"training rank {err.error_index} of {nproc} failed ({kind}: {message}) and the group "
                          f"stopped; {rerun}") from None
