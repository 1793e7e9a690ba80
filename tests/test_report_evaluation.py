"""The report's leaderboard and evaluation details: the worst-case column, setup checks beside the flags,
and RobustBench's published entries as labelled reference rows, apart from the measured rows, with an
eps that differs from the runs' marked.

The suite: AT on CIFAR-10 with WRN-34-10 and PreAct ResNet-18 at eps 8/255, records fabricated with chosen
numbers (conftest `write_run_records`), one of them with a worst case and a failed setup check.
"""

from __future__ import annotations

import json

from cat_bench import records
from cat_bench.references import load_references
from cat_bench.report import read_cells, render_report
from cat_bench.suite import load_suite

SUITE = """description = "CIFAR-10 leaderboard with reference rows (test)"
[defaults]
dataset = "cifar10"
eps = ["8/255"]
seeds = [0]
epochs = 1
n_examples = 100
attacks = ["natural", "pgd20"]

[[runs]]
methods = ["at"]
arch = "wrn-34-10"

[[runs]]
methods = ["at"]
arch = "preact-resnet18"
"""
FAILED_CHECK = {"check": "eval-mode", "status": "failed", "detail": "logits depend on the batch (planted)"}


def make_report(tmp_path, write_run_records):
    """Render the suite's report; returns (index.html's text, the WRN run's name)."""
    (tmp_path / "suite.toml").write_text(SUITE)
    suite = load_suite(str(tmp_path / "suite.toml"))
    results = tmp_path / "results"
    wrn = None
    for spec in suite.runs:
        run = write_run_records(results, spec, history=[{"epoch": 1, "lr": 0.1, "nat_acc": 0.8, "rob_acc": 0.5}],
                                accuracies={"natural": 80.0, "pgd20": 50.0})
        if spec.config["arch"] == "wrn-34-10":
            wrn = run.name
            ev = records.read_json(run / records.EVAL)
            ev["worst-case"] = {"accuracy": 0.47, "attacks": ["natural", "pgd20"], "examples": "examples/x.json"}
            ev["checks"] = [FAILED_CHECK]
            records.write_json(run / records.EVAL, ev)
    index = render_report(suite, results, tmp_path / "report")
    return index, wrn


def test_leaderboard_has_worst_case_checks_and_reference_rows(tmp_path, write_run_records):
    index, wrn = make_report(tmp_path, write_run_records)
    html = index.read_text()
    cells = read_cells(html)
    assert cells["leaderboard/cifar10/column/worst-case"]["text"] == "Worst case"
    assert "setup check eval-mode failed" in html  # beside the gradient-masking flags
    refs = load_references()
    for model in refs["model"]:
        assert f"reference/{model}/autoattack" in cells, model
    trades = refs[refs.model == "Zhang2019Theoretically"].iloc[0]
    assert cells["reference/Zhang2019Theoretically/autoattack"]["text"] == f"{trades.autoattack_acc:.2f}"
    assert cells["reference/Zhang2019Theoretically/eps"]["mark"] == "eps-mismatch"  # 0.031 beside runs at 8/255
    assert cells["reference/Madry2018Towards/eps"]["mark"] == "same-eps"
    assert "not measured here" in cells["leaderboard/cifar10/references"]["text"]
    # never mixed: every reference row comes after every measured row, in a tbody of its own
    board = html[html.index('<section id="leaderboard">'):html.index('<section id="runs">')]
    assert board.index('<tbody class="reference">') > board.rindex(f"runs/{wrn}.html")
    page = (index.parent / "runs" / f"{wrn}.html").read_text()
    assert read_cells(page)["check/eval-mode"]["mark"] == "failed" and "Worst case" in page


def test_no_reference_rows_for_mnist(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    index = render_report(load_suite("smoke"), repo / "results" / "smoke", tmp_path / "report")
    assert 'class="reference"' not in index.read_text()
    assert json.loads(json.dumps(read_cells(index.read_text()))) is not None
