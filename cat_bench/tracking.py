"""Training curves for the tools researchers watch runs in: TensorBoard (`--log tensorboard`).

The run's own records (history.jsonl, trace.jsonl) stay the source of truth; a tracker is a view
of the same numbers, written as they are recorded: per epoch the losses, the lr, the selection
accuracies and images/s; per traced batch CAT's mask mean and std and its two losses. One run per
directory: RUN_DIR/tensorboard, so `tensorboard --logdir RESULTS/runs` shows every run of a suite.
A resumed run drops what an interrupted epoch logged (SummaryWriter's purge_step). Never part of
a run's identity; never required (the `tensorboard` extra).
"""

from __future__ import annotations

from pathlib import Path

from cat_bench.errors import UsageError

TRACKERS = ("tensorboard",)
TENSORBOARD_DIR = "tensorboard"


def check_trackers(names: list[str]) -> list[str]:
    """The tracker names, checked (UsageError naming an unknown or uninstalled one) before any training."""
    for name in names:
        if name not in TRACKERS:
            raise UsageError(f"--log {name!r}; allowed: {', '.join(TRACKERS)}")
    if "tensorboard" in names:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise UsageError("--log tensorboard needs the tensorboard package: pip install 'cat-bench[tensorboard]'")
    return list(dict.fromkeys(names))


class Trackers:
    """The run's trackers; every method is a no-op when none was asked for."""

    def __init__(self, names: list[str], out: Path, first_step: int):
        self.writer = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(out) / TENSORBOARD_DIR), purge_step=first_step)

    def batch(self, row: dict) -> None:
        """One trace.jsonl row (CAT's mask and losses at a global step)."""
        if self.writer is None:
            return
        for key in ("mask_mean", "mask_std", "loss_f", "loss_g"):
            if key in row:
                self.writer.add_scalar(f"trace/{key}", row[key], row["step"])

    def epoch(self, row: dict, step: int) -> None:
        """One history.jsonl row, at the global step that ends its epoch."""
        if self.writer is None:
            return
        for key, value in row["train"].items():
            self.writer.add_scalar(f"train/{key}", value, step)
        for key in ("lr", "nat_acc", "rob_acc", "images_per_s"):
            self.writer.add_scalar(f"epoch/{key}", row[key], step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
