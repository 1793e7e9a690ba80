"""Training curves for the tools researchers watch runs in: TensorBoard (`--log tensorboard`) and
Weights & Biases (`--log wandb`).

The run's own records (history.jsonl, trace.jsonl) stay the source of truth; a tracker is a view
of the same numbers, written as they are recorded: per epoch the losses, the lr, the selection
accuracies and images/s; per traced batch CAT's mask mean and std and its two losses. One run per
directory: RUN_DIR/tensorboard, so `tensorboard --logdir RESULTS/runs` shows every run of a suite.
A resumed run drops what an interrupted epoch logged (SummaryWriter's purge_step). W&B: one W&B
run per run directory (its id is the directory's name, resumed with it), files under RUN_DIR/wandb;
whether it syncs is W&B's own setting (`WANDB_MODE=offline` keeps everything local). Never part of
a run's identity; never required (the `tensorboard` extra, or `pip install wandb`).
"""

from __future__ import annotations

from pathlib import Path

from cat_bench.errors import UsageError

TRACKERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
INSTALL = {"tensorboard": "pip install 'cat-bench[tensorboard]'", "wandb": "pip install wandb"}


def check_trackers(names: list[str]) -> list[str]:
    """The tracker names, checked (UsageError naming an unknown or uninstalled one) before any training."""
    for name in names:
        if name not in TRACKERS:
            raise UsageError(f"--log {name!r}; allowed: {', '.join(TRACKERS)}")
    import importlib.util

    for name in names:
        if importlib.util.find_spec(name) is None:
            raise UsageError(f"--log {name} needs the {name} package: {INSTALL[name]}")
    return list(dict.fromkeys(names))


class _TensorBoard:
    def __init__(self, out: Path, first_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=first_step)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, out: Path, first_step: int):
        import wandb

        (out / WANDB_DIR).mkdir(exist_ok=True)
        self.run = wandb.init(project="cat-bench", id=out.name, name=out.name, dir=str(out / WANDB_DIR),
                              resume="allow")
        self.first_step = first_step

    def log(self, scalars: dict[str, float], step: int) -> None:
        if step >= self.first_step:  # W&B steps only grow: a resumed run starts after what it logged
            self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


TRACE_POSITION = ("epoch", "batch", "step")  # where a trace.jsonl row is in training; the rest are the method's


class Trackers:
    """The run's trackers; every method is a no-op when none was asked for."""

    def __init__(self, names: list[str], out: Path, first_step: int):
        sinks = {"tensorboard": _TensorBoard, "wandb": _WandB}
        self.sinks = [sinks[name](Path(out), first_step) for name in names]

    def batch(self, row: dict) -> None:
        """One trace.jsonl row: every value the method traces (`Method.trace`), at its global step."""
        scalars = {f"trace/{k}": v for k, v in row.items() if k not in TRACE_POSITION}
        for sink in self.sinks if scalars else ():
            sink.log(scalars, row["step"])

    def epoch(self, row: dict, step: int) -> None:
        """One history.jsonl row, at the global step that ends its epoch."""
        scalars = {f"train/{k}": v for k, v in row["train"].items()}
        scalars.update({f"epoch/{k}": row[k] for k in ("lr", "nat_acc", "rob_acc", "images_per_s")})
        for sink in self.sinks:
            sink.log(scalars, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
