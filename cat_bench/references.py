"""RobustBench leaderboard entries as labelled reference rows (results/robustbench/cifar10_linf.csv).

CIFAR-10, Linf, no extra data, on the two networks of the CAT paper (PreAct ResNet-18 and
WideResNet-34-10): clean and AutoAttack accuracy as RobustBench's model_info files record them,
each line naming its source file and the repository commit it was read at. They are other
people's evaluations of other people's models, never runs of cat-bench, so they are kept apart
from measured results. The CSV is installed as the data package `cat_bench.reference_numbers`
and read through importlib.resources, like cat_bench.paper. Format: results/robustbench/README.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cat_bench.errors import UsageError
from cat_bench.paper import EPS_TOL, read_data_csv
from cat_bench.presets import parse_eps

if TYPE_CHECKING:  # importlib.abc.Traversable moved to importlib.resources.abc in 3.11
    from importlib.resources.abc import Traversable

PACKAGE = "cat_bench.reference_numbers"
FILENAME = "cifar10_linf.csv"
COLUMNS = ("model", "paper", "venue", "link", "architecture", "arch", "additional_data", "eps",
           "clean_acc", "autoattack_acc", "reported", "footnote", "source", "commit", "blob")
# RobustBench's architecture label -> cat-bench's network name.
ROBUSTBENCH_ARCH = {"PreActResNet-18": "preact-resnet18", "WideResNet-34-10": "wrn-34-10"}

# Used only when the data package is not importable (a source tree that was never installed).
_SOURCE_TREE_DIR = Path(__file__).resolve().parents[1] / "results" / "robustbench"


def reference_dir() -> Traversable | Path:
    """The folder holding cifar10_linf.csv: the installed data package, else the source tree's results/robustbench."""
    try:
        return resources.files(PACKAGE)
    except ModuleNotFoundError:
        return _SOURCE_TREE_DIR


def _read_csv() -> pd.DataFrame:
    return read_data_csv(reference_dir() / FILENAME, COLUMNS, "RobustBench reference rows")


def load_references(arch: str | None = None) -> pd.DataFrame:
    """RobustBench's CIFAR-10 Linf entries without extra data, one line per model.

    arch: a cat-bench network name ("preact-resnet18", "wrn-34-10") to keep only its entries,
    or None for all. Columns: those of the CSV (eps as RobustBench writes it, "8/255" or "0.031";
    additional_data a bool; clean_acc, autoattack_acc, reported as floats in percent) plus
    eps_value (eps as a float) and synthetic_data (the source's footnote says the model was
    trained on added synthetic images, which RobustBench does not count as extra data).
    """
    allowed = sorted(ROBUSTBENCH_ARCH.values())
    if arch is not None and arch not in allowed:
        raise UsageError(f"no RobustBench reference rows for arch {arch!r}; allowed: {', '.join(allowed)}")
    df = _read_csv()
    df["additional_data"] = df["additional_data"].map({"false": False, "true": True})
    for col in ("clean_acc", "autoattack_acc", "reported"):
        df[col] = pd.to_numeric(df[col].replace("", float("nan")), errors="raise").astype(float)
    df["eps_value"] = df["eps"].map(parse_eps)
    df["synthetic_data"] = df["footnote"].str.contains("synthetic images", regex=False)
    if arch is not None:
        df = df[df["arch"] == arch].reset_index(drop=True)
    return df


def eps_mismatch(run_eps, ref_eps):
    """True where a run's eps and a reference's eps differ by more than EPS_TOL.

    Robust accuracies at different eps are different threat models: TRADES' RobustBench entry is
    evaluated at 0.031, below 8/255 = 0.03137, so a run at 8/255 beside it must be marked.
    Floats give a bool; pandas Series or numpy arrays give one per element.
    """
    return abs(run_eps - ref_eps) > EPS_TOL
