"""Results tables: the golden fixture of real tiny runs (tests/fixtures/make_results_fixture.py) and
the grouping, formats and unfinished-run handling of cat_bench.results."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cat_bench import records
from cat_bench.errors import UsageError
from cat_bench.results import collect, concise, format_table, run_row, summarize

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "results_small"
EXPECTED = FIXTURES / "results_small_expected.csv"


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return collect(sorted(RUNS.iterdir()))


@pytest.fixture(scope="module")
def summary(runs) -> pd.DataFrame:
    return summarize(runs)


def test_golden_table():
    """The committed fixture collects to the committed expected table, byte for byte."""
    assert format_table(summarize(collect(sorted(RUNS.iterdir()))), "csv") == EXPECTED.read_text()


def test_collect_order_is_independent_of_input_order(runs):
    pd.testing.assert_frame_equal(collect(sorted(RUNS.iterdir(), reverse=True)), runs)


def test_run_row(runs):
    run = next(d for d in sorted(RUNS.iterdir()) if d.name.startswith("at-"))
    row = run_row(run)
    config = records.read_json(run / records.CONFIG)["identity"]
    result = records.read_json(run / records.EVAL)
    assert row["method"] == "at" and row["seed"] == config["seed"] and row["epochs"] == 1 and row["n_train"] == 100
    assert row["hp.random_start"] == config["hparams"]["random_start"]
    assert row["pgd20"] == pytest.approx(100 * result["attacks"]["pgd20"]["accuracy"])
    assert row["n_examples"] == 50 and row["test_eps"] == 0.3 and row["best_epoch"] == 1 and row["run"] == run.name
    assert list(runs.columns[:9]) == ["method", "dataset", "arch", "protocol", "schedule", "eps", "seed", "epochs",
                                     "n_train"]
    assert list(runs.columns[-10:]) == ["natural", "fgsm", "pgd20", "best_epoch", "n_examples", "test_eps",
                                        "masking_flags", "setup_flags", "mask_flag_epochs", "run"]


@pytest.mark.parametrize("missing", [records.DONE, records.EVAL])
def test_unfinished_run_is_none(tmp_path, missing):
    run = tmp_path / "run"
    shutil.copytree(next(RUNS.iterdir()), run)
    assert run_row(run) is not None
    (run / missing).unlink()
    assert run_row(run) is None
    assert collect([run]).empty


def test_mean_std_over_seeds(runs, summary):
    for method in ("at", "cat-cent"):
        per_run = runs[runs.method == method]
        row = summary[summary.method == method].iloc[0]
        assert row["n_seeds"] == 2 == len(per_run)
        for m in ("natural", "fgsm", "pgd20"):
            values = per_run[m].to_numpy()
            assert row[f"{m}_mean"] == pytest.approx(np.mean(values))
            assert row[f"{m}_std"] == pytest.approx(np.std(values, ddof=1))
        avgs = per_run[["natural", "fgsm", "pgd20"]].to_numpy().mean(axis=1)  # docs/method.md s4 "Avg", per run
        assert row["avg_mean"] == pytest.approx(avgs.mean())
    natural = summary[summary.method == "natural"].iloc[0]
    assert natural["n_seeds"] == 1 and np.isnan(natural["pgd20_std"])
    assert "seed" not in summary.columns and "run" not in summary.columns


def test_hparams_nan_for_other_methods(summary):
    natural = summary[summary.method == "natural"].iloc[0]
    assert all(pd.isna(natural[c]) for c in summary.columns if c.startswith("hp."))
    at = summary[summary.method == "at"].iloc[0]
    cat = summary[summary.method == "cat-cent"].iloc[0]
    assert pd.isna(at["hp.beta"]) and cat["hp.beta"] == 1.0 and pd.isna(cat["hp.random_start"])


def test_same_seed_twice_is_refused(runs):
    with pytest.raises(UsageError, match="cannot be averaged as seeds"):
        summarize(pd.concat([runs, runs.iloc[[0]]], ignore_index=True))


def test_formats(summary):
    csv = pd.read_csv(io.StringIO(format_table(summary, "csv")))
    assert list(csv["method"]) == ["at", "cat-cent", "natural"]
    md = format_table(summary, "markdown")
    assert md.startswith("| method") and all(f"| {m} " in md for m in ("at", "cat-cent", "natural"))
    rows = json.loads(format_table(summary, "json"))
    assert [r["method"] for r in rows] == ["at", "cat-cent", "natural"]
    assert rows[2]["hp.beta"] is None and rows[2]["pgd20_std"] is None


def test_unknown_format(summary):
    with pytest.raises(UsageError, match=r"'xlsx'.*csv, markdown, json"):
        format_table(summary, "xlsx")


def test_run_settings_are_listed_not_averaged(runs, summary):
    """best epochs are listed per seed, evaluation sizes listed, flags summed; none is a mean."""
    at = summary[summary.method == "at"].iloc[0]
    assert at["best_epochs"] == "/".join(str(e) for e in runs[runs.method == "at"]["best_epoch"])
    assert at["n_examples"] == "50" and at["masking_flags"] == runs[runs.method == "at"]["masking_flags"].sum()
    assert not any(c.startswith(("best_epoch_", "n_examples_", "masking_flags_", "mask_flag_epochs_"))
                   for c in summary.columns)


def test_concise_table_shows_what_differs_and_mean_std_only_for_several_seeds(summary):
    """`cat-bench results` by default: method, differing config columns, seeds, mean (± std)."""
    table = concise(summary)
    assert list(table.columns[:3]) == ["method", "arch", "seeds"]  # dataset, eps, epochs ... are the same
    assert "nan" not in format_table(table, "markdown")
    rows = {r.method: r for r in table.itertuples()}
    assert rows["natural"].seeds == 1 and "±" not in rows["natural"].pgd20
    numeric = concise(summary, numeric=True).set_index("method")
    assert np.isnan(numeric.loc["natural", "pgd20_ci95"])
    assert numeric.loc["at", "pgd20_ci95"] == pytest.approx(12.706204736 * numeric.loc["at", "pgd20_std"] / np.sqrt(2))
    at = summary[summary.method == "at"].iloc[0]
    half = 12.706204736 * at["natural_std"] / 2 ** 0.5  # t_{0.975, 1}: two seeds
    assert rows["at"].natural == f"{at['natural_mean']:.2f} ± {at['natural_std']:.2f} " \
                                 f"[{at['natural_mean'] - half:.2f}, {at['natural_mean'] + half:.2f}]"
    # a hyperparameter that differs within one method appears (by its name), eps as people write it
    two = summary[summary.method == "cat-cent"].copy()
    other = two.assign(**{"hp.b": 0.05, "eps": 8 / 255})
    both = concise(pd.concat([two, other], ignore_index=True))
    assert "b" in both.columns and "beta" not in both.columns and list(both["eps"]) == ["0.3", "8/255"]


def test_concise_table_says_which_evaluation_when_rows_differ(summary):
    """rows evaluated on different test sets or eps show n_examples and test_eps."""
    assert "n_examples" not in concise(summary).columns  # all rows: 50 examples at eps 0.3
    mixed = summary.copy()
    mixed.loc[0, "n_examples"], mixed.loc[0, "test_eps"] = "500", "0.2"
    table = concise(mixed)
    assert list(table["n_examples"]) == ["500", "50", "50"] and list(table["test_eps"]) == ["0.2", "0.3", "0.3"]


def test_csv_and_json_are_numeric_and_markdown_prints_eps_one_way(capsys):
    """Programs read numbers (mean and std columns); people read "mean ± std"; eps reads 0.1 or 8/255 everywhere."""
    import json
    from pathlib import Path

    from cat_bench.cli import main

    results = Path(__file__).resolve().parents[1] / "results" / "smoke"
    assert main(["results", "--suite", "smoke", "--results", str(results), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(isinstance(r["natural"], float) and "natural_std" in r and "natural_ci95" in r for r in rows)
    assert main(["results", "--suite", "smoke", "--results", str(results), "--per-seed"]) == 0
    table = capsys.readouterr().out
    assert "| 0.1   |" in table and "| 0.3        |" in table  # eps and test_eps as 0.1, 0.3, not 0.1000
