"""The paper's published numbers (Huang et al., ACML 2021, Tables 1-4, 7 and 8) as data.

The CSVs live in the repository's `results/paper/` folder, which pyproject.toml installs as the
data package `cat_bench.paper_numbers`; they are read through importlib.resources, so the same
code works from an editable checkout and from a wheel. Format and provenance: results/paper/README.md.
`Target` is the configuration one published row names, and `Target.matches` says whether a run is one
of it (the report's tables and a shipped model's card use the same match).
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cat_bench.data import dataset_info
from cat_bench.errors import UsageError
from cat_bench.methods import protocol_for, resolve_hparams
from cat_bench.presets import format_value, parse_eps

if TYPE_CHECKING:  # importlib.abc.Traversable moved to importlib.resources.abc in 3.11
    from importlib.resources.abc import Traversable

TABLES = ("1", "2", "3", "4", "7", "8")
COLUMNS = ("table", "row", "method", "dataset", "arch", "eps", "a", "b", "metric", "mean", "std")
PACKAGE = "cat_bench.paper_numbers"

# Used only when the data package is not importable (e.g. running from a source tree that was
# never installed): the folder beside `cat_bench/` in the repository.
_SOURCE_TREE_DIR = Path(__file__).resolve().parents[1] / "results" / "paper"
# Two eps closer than this are the same (a run's 0.0313... is a row's printed 8/255); 0.031 and 8/255 are not.
EPS_TOL = 1e-6


def paper_dir() -> Traversable | Path:
    """The folder holding table<N>.csv: the installed data package, else the source tree's results/paper."""
    try:
        return resources.files(PACKAGE)
    except ModuleNotFoundError:
        return _SOURCE_TREE_DIR




LOG_COLUMNS = ("method", "dataset", "eps", "epoch", "metric", "error")


def load_authors_log() -> pd.DataFrame:
    """The authors' training log of CATcw on MNIST (docs/method.md s3; results/paper/authors_log.csv).

    One line per (epoch, metric): test error in % on the full test set at test eps 0.3 ("natural"
    or "pgd20"), for the authors' run at eps_train 0.4. Which code produced it is the open question
    (the released Train_MNIST.py reduces Eq. 14 as KL / B), so every variant is compared with it.
    Adds `accuracy` = 100 - error.
    """
    source = paper_dir() / "authors_log.csv"
    df = pd.read_csv(io.StringIO(source.read_text(encoding="utf-8")))
    if tuple(df.columns) != LOG_COLUMNS:
        raise UsageError(f"{source}: columns {list(df.columns)}, expected {list(LOG_COLUMNS)}")
    return df.assign(accuracy=100.0 - df["error"])


def read_data_csv(source, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """A shipped data CSV as strings, its columns checked; UsageError naming `what` when it is missing."""
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} are missing: {source} not found") from None
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if tuple(df.columns) != columns:
        raise UsageError(f"{source}: columns {list(df.columns)}, expected {list(columns)}")
    return df


def _read_table(table: str) -> pd.DataFrame:
    return read_data_csv(paper_dir() / f"table{table}.csv", COLUMNS, f"published numbers for table {table!r}")


def load_published(table: str | None = None) -> pd.DataFrame:
    """The paper's published numbers in long format, one line per (table, row, metric).

    table: one of TABLES ("1", "2", "3", "4", "7", "8"), or None for all of them concatenated.
    Columns: table, row, method, dataset, arch, eps (as printed, e.g. "8/255"), a, b (floats,
    NaN for baselines), metric, mean, std (floats, std NaN where the paper prints none),
    plus eps_value (eps as a float).
    """
    if table is None:
        names = TABLES
    else:
        key = str(table).strip()
        if key not in TABLES:
            raise UsageError(f"unknown paper table {table!r}; allowed: {', '.join(TABLES)}")
        names = (key,)
    df = pd.concat([_read_table(t) for t in names], ignore_index=True)
    df["eps_value"] = df["eps"].map(parse_eps)
    for col in ("a", "b", "mean", "std"):
        df[col] = pd.to_numeric(df[col].replace("", float("nan")), errors="raise").astype(float)
    return df


# ---------------------------------------------------------------------------------------------
# Targets: the configuration one published row (for one architecture) names


@dataclass(frozen=True)
class Target:
    """The configuration a published row names for one architecture."""

    method: str
    dataset: str
    arch: str
    eps: str  # as printed, e.g. "8/255"
    eps_value: float
    a: float  # NaN for baselines
    b: float

    @property
    def overrides(self) -> dict[str, str]:
        out = {}
        if not isnan(self.a):
            out["beta"] = format_value(float(self.a))
        if not isnan(self.b):
            out["b"] = format_value(float(self.b))
        return out

    @functools.cached_property
    def hparams(self) -> dict:
        """Every method hyperparameter the row implies: a and b as printed, the rest at the defaults of
        the method's official protocol for this dataset and network (MART's beta 5 for ResNet-18)."""
        return resolve_hparams(self.method, dataset_info(self.dataset).family, self.overrides,
                               protocol_for(self.method, self.dataset, self.arch))

    def matches(self, config: dict) -> bool:
        """Whether a resolved config (RunSpec.config / config.json's identity) is a run of this row."""
        if (config["method"], config["dataset"], config["arch"]) != (self.method, self.dataset, self.arch):
            return False
        if (config["protocol"], config["schedule"]["name"]) != ("paper", "official"):
            return False  # the published numbers are the paper protocol with each method's own schedule
        if abs(config["eps"] - self.eps_value) > EPS_TOL:
            return False
        have = config.get("hparams", {})
        return all(same_value(have.get(k), v) for k, v in self.hparams.items()) and set(have) <= set(self.hparams)

    def filters(self) -> list[str]:
        """`--only` filters naming this row (eps as printed)."""
        out = [f"method={self.method}", f"dataset={self.dataset}", f"arch={self.arch}", f"eps={self.eps}"]
        return out + [f"{k}={v}" for k, v in self.overrides.items()]


def isnan(v) -> bool:
    """None or NaN: a number the paper does not print."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def same_value(a, b) -> bool:
    """Hyperparameter values: None/NaN alike, numbers with a relative tolerance, anything else exactly."""
    if isnan(a) or isnan(b):
        return isnan(a) and isnan(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b
