"""Results tables: finished runs collected into pandas, grouped over seeds (the rows of the paper's tables).

`collect` turns run directories (records.py layout) into one row per finished run: the config
columns that identify a row of the paper's tables, one `hp.<key>` column per method hyperparameter,
and every evaluated attack's accuracy in percent (docs/method.md s4). `summarize` groups the runs over
seeds into mean and std per metric plus the paper's "Avg" (docs/method.md s4: the mean of natural and
all robust accuracies in the row). `format_table` writes csv, markdown or json.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cat_bench import records
from cat_bench.errors import UsageError
from cat_bench.per_example import WORST
from cat_bench.checks import as_flags
from cat_bench.eval_attacks import attack_order
from cat_bench.presets import format_eps

CONFIG_COLUMNS = ["method", "dataset", "arch", "protocol", "schedule", "eps", "seed", "epochs", "n_train"]
HP_PREFIX = "hp."


def health_columns() -> dict[str, str]:
    """One column per health flag a registered method declares (`Method.HEALTH_FLAGS`), "<key>_epochs" (the
    `done` summary's list, counted), with what it watches ("mask")."""
    from cat_bench.methods import health_keys

    return {f"{key}_epochs": what for key, what in health_keys().items()}


def run_metrics() -> list[str]:
    """The columns of a run besides its config and its attacks: what `run_row` reads from done and eval.json."""
    return ["best_epoch", "n_examples", "test_eps", "masking_flags", "setup_flags", *health_columns()]
FORMATS = ("csv", "markdown", "json")
FLOAT_FORMAT = "%.4f"


def run_row(run_dir: Path) -> dict | None:
    """One finished run as a flat dict; None when it is unfinished (no `done` marker or no eval.json).

    Keys: the config columns (`epochs` is the schedule's), `hp.<key>` per method hyperparameter, one
    column per evaluated attack with its accuracy in percent, `best_epoch` (from `done`),
    `n_examples` and `test_eps` (eval.json's key: which evaluation the row shows), `masking_flags` (how many gradient-masking flags evaluation
    raised), `setup_flags` (how many setup checks did not pass: failed, handled or not run;
    cat_bench.checks), one `<flag>_epochs` per method health flag (`health_columns`: how many epochs
    raised it, e.g. CAT's collapsed or saturated mask; 0 for other methods) and `run` (the directory's name). `protocol` is "valid" for runs recorded before
    protocols existed (they clipped to [0,1]). An external run (cat_bench.external) has method
    "external:<what was loaded>"; `worst-case` is there when the run has per-example records.
    """
    run_dir = Path(run_dir)
    if not (run_dir / records.DONE).is_file() or not (run_dir / records.EVAL).is_file():
        return None
    if not (run_dir / records.CONFIG).is_file():
        raise UsageError(f"{run_dir} has `{records.DONE}` and `{records.EVAL}` but no {records.CONFIG}; "
                         f"it is not a complete run directory")
    config = records.read_identity(run_dir)
    done = records.read_json(run_dir / records.DONE)
    result = records.read_json(run_dir / records.EVAL)
    method = config["method"]
    if "external" in config:  # a model cat-bench did not train (cat_bench.external): named by what was loaded
        method = f"external:{config['external']['label']}"
    row = {"method": method, "dataset": config["dataset"], "arch": config["arch"],
           "protocol": config["protocol"], "schedule": config["schedule"]["name"],
           "eps": config["eps"], "seed": config["seed"], "epochs": config["schedule"]["epochs"],
           "n_train": config["n_train"]}
    row.update({HP_PREFIX + k: v for k, v in config["hparams"].items()})
    row.update({name: 100 * a["accuracy"] for name, a in result["attacks"].items()})
    if WORST in result:  # correct under every attack run (cat_bench.per_example)
        row[WORST] = 100 * result[WORST]["accuracy"]
    row.update(best_epoch=done["best_epoch"], n_examples=result["key"]["n_examples"], test_eps=result["key"]["eps"],
               masking_flags=len(result.get("flags", [])), setup_flags=len(as_flags(result.get("checks", []))),
               **{column: len(done.get(column, [])) for column in health_columns()}, run=run_dir.name)
    return row


def _config_columns(df: pd.DataFrame) -> list[str]:
    return CONFIG_COLUMNS + sorted(c for c in df.columns if c.startswith(HP_PREFIX))


def _attack_columns(df: pd.DataFrame) -> list[str]:
    """Attack accuracy columns: the evaluation order of docs/method.md s4, then any other attack by name, then the
    worst case over them (where the runs have per-example records)."""
    known = set(_config_columns(df)) | set(run_metrics()) | {"run", WORST}
    order = attack_order()
    others = sorted(c for c in df.columns if c not in known and c not in order)
    return [c for c in order if c in df.columns] + others + ([WORST] if WORST in df.columns else [])


def in_attack_order(names: Iterable[str]) -> list[str]:
    """The attacks in the paper's column order (the registry's, cat_bench.eval_attacks), any others after them by name."""
    names = set(names)
    order = attack_order()
    return [a for a in order if a in names] + sorted(names - set(order))


def collect(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """One row per finished run (unfinished ones are skipped), sorted by the config columns.

    Columns: config columns, `hp.*` (sorted by name; NaN for a method without that hyperparameter),
    attack accuracies in percent (evaluation order), `best_epoch`, `n_examples`, `masking_flags`, `run`.
    """
    rows = [row for row in map(run_row, run_dirs) if row is not None]
    df = pd.DataFrame(rows, columns=None if rows else CONFIG_COLUMNS + run_metrics() + ["run"])
    config = _config_columns(df)
    df = df[config + _attack_columns(df) + run_metrics() + ["run"]]
    return df.sort_values(config + ["run"], kind="mergesort", na_position="last").reset_index(drop=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Group `collect`'s runs over seeds: per metric `<m>_mean` and `<m>_std` (ddof=1; NaN for one seed).

    Groups are every config column except `seed`, with NaN as a value (`hp.*` columns are NaN for
    methods without that hyperparameter). Adds `n_seeds` and the paper's "Avg" (docs/method.md s4: mean
    of natural and all robust accuracies in the row), computed per run over the attacks it was
    evaluated on and then averaged over seeds as `avg_mean` (with `avg_std`). Columns: group keys,
    `n_seeds`, attacks (evaluation order), avg, then what is not averaged: `best_epochs` (each seed's,
    "40/38"), `n_examples` and `test_eps` (the evaluations shown), `masking_flags`, `setup_flags` and the
    health columns (totals); rows
    sorted by the group keys. Two runs sharing every config column and the seed differ only in
    settings the table does not show, and would be averaged as if they were seeds: UsageError.
    """
    keys = [c for c in _config_columns(df) if c != "seed"]
    attacks = [c for c in _attack_columns(df) if c != WORST]  # the paper's Avg is over attacks, not the worst case
    runs = df.assign(avg=df[attacks].mean(axis=1))
    dup = runs[runs.duplicated(keys + ["seed"], keep=False)]
    if not dup.empty:
        raise UsageError(f"runs {', '.join(dup['run'])} share every table column including the seed; they differ "
                         f"in settings the table does not show (e.g. batch size), so they cannot be averaged as seeds")
    metrics = attacks + ["avg"] + ([WORST] if WORST in df.columns else [])
    grouped = runs.groupby(keys, dropna=False, sort=True)
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{m}_{stat}" for m, stat in stats.columns]
    stats.insert(0, "n_seeds", grouped.size())
    # Not metrics: which epoch each seed kept, the evaluation sizes, and flag counts are listed or summed.
    stats["best_epochs"] = grouped["best_epoch"].agg(lambda v: "/".join(str(int(e)) for e in v))
    stats["n_examples"] = grouped["n_examples"].agg(lambda v: "/".join(str(int(n)) for n in sorted(set(v))))
    stats["test_eps"] = grouped["test_eps"].agg(lambda v: "/".join(format_eps(e) for e in sorted(set(v))))
    stats["masking_flags"] = grouped["masking_flags"].sum()
    stats["setup_flags"] = grouped["setup_flags"].sum()
    for column in health_columns():
        stats[column] = grouped[column].sum()
    out = stats.reset_index()
    return out.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True)


def t_half_width(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the 95% t interval of a mean over n seeds: t_{0.975, n-1} * std / sqrt(n) (NaN for one seed).

    Seeds are few (2-5), so the normal 1.96 would understate the interval (t_{0.975, 1} = 12.7).
    """
    n = n.astype(float)
    if not (n > 1).any():  # one seed everywhere: no interval, and no scipy needed (a bare GPU image)
        return pd.Series(float("nan"), index=n.index)
    from scipy.stats import t

    half = t.ppf(0.975, (n - 1).where(n > 1)) * std / n.pow(0.5)
    return half.where(n > 1)


def concise(summary: pd.DataFrame, numeric: bool = False) -> pd.DataFrame:
    """The table a reader wants first: `method`, the config columns that differ between rows, the
    hyperparameters that differ between rows of one method, `seeds`, and each metric as "mean" (one
    seed) or "mean ± std [95% t interval]" (several), in percent with two decimals; flag totals when there are
    any. `numeric` (CSV and JSON, read by programs): each metric as numbers, `<m>` the mean, `<m>_std` and
    `<m>_ci95` (the interval's half-width)."""
    config = [c for c in summary.columns if c in CONFIG_COLUMNS]
    hparams = [c for c in summary.columns if c.startswith(HP_PREFIX)]
    varying = ["method"] + [c for c in config if c != "method" and summary[c].astype(str).nunique() > 1]
    # a hyperparameter is shown when it tells apart rows of one method (another method's NaN says nothing)
    varying += [c for c in hparams if (summary.groupby("method")[c].nunique() > 1).any()]
    metrics = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]
    out = summary[varying].copy()
    if "eps" in out and not numeric:
        out["eps"] = out["eps"].map(format_eps)
    out.columns = [c[len(HP_PREFIX):] if c.startswith(HP_PREFIX) else c for c in out.columns]
    out["seeds"] = summary["n_seeds"]
    for m in metrics:
        mean, std = summary[f"{m}_mean"], summary[f"{m}_std"]
        half = t_half_width(std, summary["n_seeds"])
        if numeric:
            out[m], out[f"{m}_std"], out[f"{m}_ci95"] = mean, std, half
            continue
        out[m] = [("—" if pd.isna(a) else f"{a:.2f}" if n == 1 or pd.isna(b)
                   else f"{a:.2f} ± {b:.2f} [{a - h:.2f}, {a + h:.2f}]")
                  for a, b, h, n in zip(mean, std, half, summary["n_seeds"])]
    for c in ("n_examples", "test_eps"):  # which evaluation each row shows, when the rows differ
        if summary[c].nunique() > 1:
            out[c] = summary[c]
    for column, what in health_columns().items():
        if summary[column].any():
            out[f"{what} flags"] = summary[column]
    if summary["masking_flags"].any():
        out["masking flags"] = summary["masking_flags"]
    if summary["setup_flags"].any():
        out["setup flags"] = summary["setup_flags"]
    return out


def format_table(df: pd.DataFrame, fmt: str) -> str:
    """The table as csv (floats as %.4f), markdown (tabulate) or json (a list of row records)."""
    if fmt == "csv":
        return df.to_csv(index=False, float_format=FLOAT_FORMAT)
    if fmt == "markdown":
        for c in ("eps", "test_eps"):  # eps printed one way in every table: 0.3, 8/255
            if c in df and pd.api.types.is_numeric_dtype(df[c]):
                df = df.assign(**{c: df[c].map(format_eps)})
        text_columns = [i for i, (_, col) in enumerate(df.items()) if not pd.api.types.is_numeric_dtype(col)]  # "80.00" stays
        return df.to_markdown(index=False, floatfmt=FLOAT_FORMAT[1:], disable_numparse=text_columns) + "\n"
    if fmt == "json":
        return df.to_json(orient="records", indent=2) + "\n"
    raise UsageError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
