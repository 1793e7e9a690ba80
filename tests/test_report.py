"""The HTML report (cat_bench.report): a golden file of Table 1's cells rendered from a committed fixture of
real tiny MNIST runs (tests/fixtures/make_report_fixture.py), the 'not run yet' commands, figures and
their no-data notes, run pages, determinism and speed, and the pure table / leaderboard logic."""

import json
import math
import os
import re
import shlex
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

from cat_bench import records
from cat_bench.paper import Target
from cat_bench.report import read_cells, render_report
from cat_bench.report.runs import load_runs
from cat_bench.report.tables import build_tables, cells_frame, exact_filters, leaderboard
from cat_bench.settings import Settings
from cat_bench.suite import filter_runs, load_suite

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SUITE = FIXTURES / "report_suite.toml"
RESULTS = FIXTURES / "report_results"
EXPECTED = FIXTURES / "report_expected.json"
SUITE_REF = "tests/fixtures/report_suite.toml"
RESULTS_REF = "tests/fixtures/report_results"  # as the golden file's printed commands name it (from REPO)
RUN_NAMES = sorted(p.name for p in (RESULTS / "runs").iterdir())
AT_ROW, CAT_ROW, TRADES_ROW = "AT (eps_train=0.3)", "CATcent (eps_train=0.3)", "TRADES (eps_train=0.3)"


@pytest.fixture(scope="module")
def suite():
    return load_suite(str(SUITE))


def render_fixture(suite, out: Path) -> Path:
    """The fixture's report, rendered from the repository root as the golden file's commands name it."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return render_report(suite, Path(RESULTS_REF), out, suite_ref=SUITE_REF)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def report(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, render_fixture(suite, out).read_text()


@pytest.fixture(scope="module")
def cells(report):
    return read_cells(report[1])


def commands(html: str) -> list[str]:
    return [unescape(c) for c in re.findall(r'<code class="cmd">(.*?)</code>', html, re.S)]


def test_fixture_is_the_suite(suite):
    """The committed runs are exactly the fixture suite's runs (same resolved configs)."""
    assert sorted(r.name for r in suite.runs) == RUN_NAMES
    runs, table = load_runs(suite, RESULTS)
    assert all(r.state == "done" for r in runs) and len(table) == 3


def test_table1_cells_match_the_golden_file(cells):
    expected = json.loads(EXPECTED.read_text())
    got = {k: v for k, v in cells.items() if k.startswith("table1/")}
    assert got == expected


def test_reproduced_cells_are_mean_std_over_seeds(cells):
    """Independently of the golden file: CATcent's cell is the mean ± std (ddof=1) of its two seeds' eval.json."""
    accs = []
    for name in RUN_NAMES:
        if name.startswith("cat-cent"):
            ev = json.loads((RESULTS / "runs" / name / "eval.json").read_text())
            accs.append(100 * ev["attacks"]["natural"]["accuracy"])
    mean, std = sum(accs) / 2, abs(accs[0] - accs[1]) / math.sqrt(2)
    cell = cells[f"table1/{CAT_ROW}/natural"]
    assert cell["text"].startswith(f"{mean:.2f} ± {std:.2f} (2 seeds) paper 99.3 {mean - 99.3:+.2f}")
    assert cell["mark"] == ("below" if mean - 99.3 < -1 else "above" if mean - 99.3 > 1 else "within")
    assert cells[f"table1/{AT_ROW}/natural"]["text"].split(" paper ")[0].endswith("(1 seed)")


def test_unrun_row_shows_not_run_yet_and_the_exact_command(cells):
    for metric in ("natural", "pgd20", "pgd100"):
        assert cells[f"table1/{TRADES_ROW}/{metric}"]["text"].startswith("not run yet paper ")
    text = cells[f"table1/{TRADES_ROW}/runs"]["text"]
    assert text.startswith("not run yet: ")
    assert (f"cat-bench run --suite mnist --results {RESULTS_REF} --only method=trades dataset=mnist "
            f"arch=trades-smallcnn eps=0.3 ") in text + " "
    # the shipped mnist suite's runs that the command selects are exactly Table 1's TRADES eps 0.3 runs
    selected = filter_runs(load_suite("mnist").runs, ["method=trades", "dataset=mnist", "arch=trades-smallcnn", "eps=0.3"])
    assert selected and all(s.config["method"] == "trades" and s.config["eps"] == 0.3 for s in selected)


def test_every_command_selects_runs(report):
    """Every printed `cat-bench run --suite S --results R --only ...` names the report's results folder and a
    suite whose filter selects at least one run."""
    cmds = commands(report[1])
    assert len(cmds) > 20
    suites = {}
    for cmd in cmds:
        argv = shlex.split(cmd)
        if argv[:2] != ["cat-bench", "run"]:
            continue
        assert argv[4:6] == ["--results", RESULTS_REF], cmd
        name, filters = argv[3], argv[7:]
        if name not in suites:
            suites[name] = load_suite(str(REPO / name) if name.endswith(".toml") else name)
        assert filter_runs(suites[name].runs, filters), cmd


def test_exact_filters_exclude_other_runs_of_the_same_method():
    """Table 2's CATcent (b=0.05) in cifar10-preact: Figure 4's ablations and Figure 5's PGD losses share
    method, eps, a and b, so the command adds ablation=none pgd_loss=ce to select only the row's runs."""
    runs = load_suite("cifar10-preact").runs
    target = Target("cat-cent", "cifar10", "preact-resnet18", "8/255", 8 / 255, 5.0, 0.05)
    filters = exact_filters(target, runs)
    assert "ablation=none" in filters and "pgd_loss=ce" in filters
    selected = filter_runs(runs, filters)
    assert len(selected) == 5 and all(target.matches(s.config) for s in selected)


def test_figures_have_an_image_or_a_no_data_note(report):
    out, html = report
    for fid in ("2", "3", "4", "5", "6"):
        section = re.search(rf'<section id="figure{fid}".*?</section>', html, re.S).group(0)
        imgs = re.findall(r'<img src="([^"]+)"', section)
        for src in imgs:
            assert (out / src).is_file(), src
        if not imgs:
            assert 'class="nodata"' in section and "cat-bench run --suite" in section
    # the fixture keeps no checkpoints, so Figure 2 degrades to its note
    fig2 = re.search(r'<section id="figure2".*?</section>', html, re.S).group(0)
    assert "<img" not in fig2 and "checkpoint" in fig2
    assert not (out / "figures" / "figure2.png").exists()
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (out / src).is_file(), src


def test_one_page_per_finished_run(report):
    out, html = report
    assert sorted(p.stem for p in (out / "runs").glob("*.html")) == RUN_NAMES
    for href in set(re.findall(r'href="(runs/[^"#]+)"', html)):
        assert (out / href).is_file(), href
    page = (out / "runs" / f"{RUN_NAMES[0]}.html").read_text()
    assert 'href="../style.css"' in page and 'src="' in page
    for section in ("Selected epoch", "Evaluation", "Training curves", "Config", "Time, hardware and versions"):
        assert section in page
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (out / "runs" / src).is_file()


def test_the_curves_caption_names_every_panel_drawn(report):
    out, _ = report
    pages = {p.stem: p.read_text() for p in (out / "runs").glob("*.html")}
    cat = [name for name in pages if name.startswith("cat-")]
    assert cat and any(not name.startswith("cat-") for name in pages)
    for name, page in pages.items():
        if name.startswith("cat-"):  # three panels: accuracy, losses, the mask
            assert "Middle: training losses" in page and "Right: mask_mean" in page, name
        else:
            assert "Right: training losses" in page and "Middle" not in page, name


def test_a_run_measured_under_another_threat_model_is_flagged_on_the_leaderboard():
    from types import SimpleNamespace

    from cat_bench.report.tables import differing_settings, unequal_threat_models

    def run(name, clip, n=500, external=False):
        identity = {"method": "external" if external else "at", "hparams": {}, "precision": "fp32",
                    "schedule": {"name": "external" if external else "official", "epochs": 0 if external else 2,
                                 **({} if external else {"batch_size": 50})}, "n_train": 0 if external else 100}
        if external:
            identity["external"] = {"kind": "torch-export"}
        attacks = {"pgd20": {"accuracy": 0.5, "settings": {"clip": clip}}}
        return SimpleNamespace(name=name, identity=identity, evaluation={"key": {"eps": 0.3, "n_examples": n},
                                                                         "attacks": attacks})

    runs = [run("a", False), run("b", False), run("c", True, external=True), run("d", False, n=100)]
    flags = unequal_threat_models(runs)
    assert set(flags) == {"c", "d"}
    assert flags["c"][0]["detail"] == "clip True (most runs here: False)"
    assert flags["d"][0]["detail"] == "examples 100 (most runs here: 500)"
    assert unequal_threat_models(runs[:2]) == {}
    settings = differing_settings(runs)
    assert settings["c"] == "external torch-export, not trained here" and "None" not in " ".join(settings.values())


def test_a_trained_but_unevaluated_run_says_so(tmp_path):
    from cat_bench.report.runs import RunRecord
    from cat_bench.suite import RunSpec

    spec = RunSpec({"method": "at"}, ("natural",), None, ("x",))
    run = RunRecord(spec, tmp_path, "partial")
    assert run.state_label == "in progress"
    (tmp_path / records.DONE).write_text("{}")
    assert run.state_label == "trained, not evaluated"


def test_static_page_needs_no_server_or_network(report):
    out, html = report
    assert (out / "style.css").is_file() and 'href="style.css"' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "Leaderboard" in html and "Table 8" in html


def test_rendering_is_deterministic(suite, report, tmp_path):
    out, _ = report
    render_fixture(suite, tmp_path)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_leaderboard_ranks_by_strongest_attack(suite, report):
    runs, _ = load_runs(suite, RESULTS)
    (board,) = leaderboard(runs)
    scores = [e.score for e in board.entries]
    assert scores == sorted(scores, reverse=True)
    for e in board.entries:
        assert e.score == min(v for k, v in e.accuracies.items() if k != "natural")
        assert e.ranked_by in ("pgd20", "pgd100")
    assert board.attacks == ["pgd20", "pgd100"]
    assert 'id="leaderboard"' in report[1]


# ---------------------------------------------------------------------------------------------
# The pure logic against a stand-in published table


def _published(rows: list[dict]) -> pd.DataFrame:
    base = dict(table="9", method="cat-cent", dataset="mnist", arch="smallcnn", eps="0.3", a=1.0, b=0.3,
                std=math.nan, eps_value=0.3)
    return pd.DataFrame([{**base, **r} for r in rows])


def test_marks_use_published_std_or_one_point(suite):
    runs, collected = load_runs(suite, RESULTS)
    rep = {m: collected[collected.method == "cat-cent"][m].mean() for m in ("natural", "pgd20", "pgd100")}
    pub = _published([
        dict(row="CAT", metric="natural", mean=rep["natural"] - 0.9),  # within 1 point
        dict(row="CAT", metric="pgd20", mean=rep["pgd20"] + 1.5, std=2.0),  # within the published std
        dict(row="CAT", metric="pgd100", mean=rep["pgd100"] - 1.5),  # above by more than 1 point
    ])
    (table,) = build_tables(pub, collected, suite.runs, SUITE_REF)
    df = cells_frame([table]).set_index("metric")
    assert df.loc["natural", "mark"] == "within" and df.loc["pgd20", "mark"] == "within"
    assert df.loc["pgd100", "mark"] == "above"
    assert df.loc["pgd100", "diff"] == pytest.approx(1.5)
    assert (df["n"] == 2).all() and (df["status"] == "reproduced").all()


def test_avg_only_when_every_column_was_evaluated(suite):
    _, collected = load_runs(suite, RESULTS)
    cat = collected[collected.method == "cat-cent"]
    cols = ["natural", "pgd20", "pgd100"]
    pub = _published([dict(row="CAT", metric=m, mean=50.0) for m in cols + ["avg"]] +
                      [dict(row="CAT+", metric=m, mean=50.0) for m in cols + ["fgsm", "avg"]])
    (table,) = build_tables(pub[pub.row == "CAT"], collected, suite.runs, SUITE_REF)
    avg = cells_frame([table]).set_index("metric").loc["avg"]
    per_run = cat[cols].mean(axis=1)
    assert avg["rep_mean"] == pytest.approx(per_run.mean()) and avg["rep_std"] == pytest.approx(per_run.std())
    # with an FGSM column the fixture never evaluated, FGSM and Avg are "not evaluated"
    (table,) = build_tables(pub[pub.row == "CAT+"], collected, suite.runs, SUITE_REF)
    df = cells_frame([table]).set_index("metric")
    assert df.loc["fgsm", "status"] == "not-evaluated" and df.loc["avg", "status"] == "not-evaluated"
    assert df.loc["natural", "status"] == "reproduced"


def test_rows_of_this_suite_not_run_yet_name_this_suite(tmp_path):
    """A row whose runs this suite has but has not finished: 'not run yet' with a command on this suite."""
    text = SUITE.read_text() + '\n[[runs]]\nmethods = ["trades"]\nseeds = [0, 1]\n'
    path = tmp_path / "more.toml"
    path.write_text(text)
    suite = load_suite(str(path))
    _, collected = load_runs(suite, RESULTS)
    pub = _published([dict(row="TRADES", method="trades", arch="trades-smallcnn", a=math.nan, b=math.nan,
                           metric="natural", mean=99.3)])
    (table,) = build_tables(pub, collected, suite.runs, "more.toml")
    (row,) = table.rows
    assert row.cells[0].status == "not-run" and row.cells[0].rep_text == "not run yet"
    (rt,) = row.targets
    assert rt.command == "cat-bench run --suite more.toml --only method=trades dataset=mnist arch=trades-smallcnn eps=0.3"
    assert rt.note is None and rt.pending == 2


def test_a_row_whose_run_is_training_says_how_far_it_has_come(tmp_path):
    """An unfinished run with trained epochs: the cells say "in progress", the row counts as not run, and the
    target says the epoch reached of the schedule's and the best epoch so far with its selection numbers."""
    path = tmp_path / "more.toml"
    path.write_text(SUITE.read_text() + '\n[[runs]]\nmethods = ["trades"]\nseeds = [0, 1]\n')
    suite = load_suite(str(path))
    _, collected = load_runs(suite, RESULTS)
    pub = _published([dict(row="TRADES", method="trades", arch="trades-smallcnn", a=math.nan, b=math.nan,
                           metric="natural", mean=99.3)])
    seed0 = next(s for s in suite.runs if s.config["method"] == "trades" and s.config["seed"] == 0)
    history = [{"epoch": 1, "best_epoch": 1, "nat_acc": 0.9, "rob_acc": 0.5},
               {"epoch": 2, "best_epoch": 1, "nat_acc": 0.8, "rob_acc": 0.4}]
    (table,) = build_tables(pub, collected, suite.runs, "more.toml", in_progress={seed0.name: history})
    (row,) = table.rows
    assert row.cells[0].status == "in-progress" and row.cells[0].rep_text == "in progress"
    assert row.in_progress and row.verdict == "not run" and table.counts()["not run"] == 1
    (rt,) = row.targets
    epochs = seed0.config["schedule"]["epochs"]
    assert rt.progress == [f"seed 0: 2 of {epochs} epochs trained; selected so far: epoch 1, natural 90.00, PGD-20 "
                           f"50.00 (the per-epoch selection measurement on {seed0.config['selection']['n'] or 'all'} "
                           f"{seed0.config['selection']['on']} examples)"]
    assert rt.command is not None and rt.pending == 2


def test_every_published_row_is_trained_by_a_shipped_suite():
    """Each row's target (with its method's official protocol, e.g. MART's beta 5 on ResNet-18) is
    matched by a run of the paper suite; the same run under --protocol valid or --schedule uniform is not."""
    from cat_bench.paper import load_published
    from cat_bench.report.tables import locate_shipped
    from cat_bench.config import resolve_config

    pub = pd.concat([load_published(t) for t in ("1", "2", "3", "4", "7", "8")])
    seen = 0
    for _, line in pub.drop_duplicates(["table", "row", "arch"]).iterrows():
        target = Target(line["method"], line["dataset"], line["arch"], line["eps"], float(line["eps_value"]),
                        float(line["a"]), float(line["b"]))
        assert locate_shipped(target) is not None, (line["table"], line["row"], line["arch"])
        seen += 1
    assert seen > 40
    mart = Target("mart", "cifar10", "preact-resnet18", "8/255", 8 / 255, math.nan, math.nan)
    assert mart.matches(resolve_config("mart", "cifar10", 8 / 255))
    assert not mart.matches(resolve_config("mart", "cifar10", 8 / 255, protocol="valid"))
    assert not mart.matches(resolve_config("mart", "cifar10", 8 / 255, schedule="uniform"))


def test_runs_of_another_schedule_or_hparam_do_not_match(suite):
    _, collected = load_runs(suite, RESULTS)
    pub = _published([dict(row="CAT b=0.1", b=0.1, metric="natural", mean=99.0),
                      dict(row="CAT eps 8/255", eps="8/255", eps_value=8 / 255, metric="natural", mean=99.0)])
    (table,) = build_tables(pub, collected, suite.runs, SUITE_REF, locate=lambda t: None)
    for row in table.rows:
        assert row.cells[0].status == "not-run"
        assert row.targets[0].command.startswith("cat-bench train --method cat-cent --dataset mnist")


def test_figures_3_to_6_draw_from_real_runs(suite, tmp_path):
    """The fixture's real runs stand in for the figures' labelled runs: each figure draws a PNG."""
    from cat_bench.report import figures

    runs, _ = load_runs(suite, RESULTS)
    done = [r for r in runs if r.finished]
    for fid, draw in (("3", figures.figure3), ("4", figures.figure4), ("5", figures.figure5), ("6", figures.figure6)):
        assert draw(done, tmp_path / f"figure{fid}.png"), fid
        assert (tmp_path / f"figure{fid}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not figures.figure3([], tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_figure2_draws_from_a_trained_cat_model(tmp_path):
    """A real tiny CATcent run on the shipped mnist-mini, with its checkpoint: Figure 2 is drawn from it."""
    import torch

    from cat_bench.evaluate import evaluate
    from cat_bench.report.figures import figure2
    from cat_bench.report.runs import RunRecord
    from cat_bench.suite import RunSpec
    from cat_bench.config import resolve_config
    from cat_bench.train import train

    config = resolve_config("cat-cent", "mnist-mini", 0.3, epochs=1, n_train=100, batch_size=50, select_n=20)
    out = tmp_path / "run"
    summary = train(config, out, Settings("cpu", progress=False), log=lambda m: None)
    result = evaluate(out, "natural", n_examples=20, progress=False, log=lambda m: None, device=torch.device("cpu"))
    run = RunRecord(RunSpec(config, ("natural",), 20, ("Figure 2",)), out, "done", identity=config, provenance={},
                    done=summary, evaluation=result)
    name, text = figure2([run], tmp_path / "figure2.png")
    assert name == run.name and "epoch 1" in text
    assert "x + M δ, not clipped (paper protocol)" in text  # CAT's MNIST protocol never clips
    assert (tmp_path / "figure2.png").is_file()


# ---------------------------------------------------------------------------------------------
# Table 1's bar and verdicts, on fabricated records of the fidelity suite's full-length runs

CATCW_04, CATCENT_04 = "CATcw (eps_train=0.4)", "CATcent (eps_train=0.4)"


def test_table1_has_its_own_bar_and_other_tables_keep_one_point(suite):
    """Table 1's bar is 0.3 points natural and 1.5 robust (a per-table constant); a stand-in table without
    its own bar keeps the 1-point rule. A natural miss of 0.4 and a PGD-20 miss of 1.4 show the difference."""
    from cat_bench.report.tables import BARS, DEFAULT_BAR

    assert (BARS["1"].natural, BARS["1"].robust) == (0.3, 1.5) and (DEFAULT_BAR.natural, DEFAULT_BAR.robust) == (1, 1)
    _, collected = load_runs(suite, RESULTS)
    rep = {m: collected[collected.method == "cat-cent"][m].mean() for m in ("natural", "pgd20")}
    rows = [dict(row="CAT", metric="natural", mean=rep["natural"] + 0.4),
            dict(row="CAT", metric="pgd20", mean=rep["pgd20"] + 1.4)]
    marks = {}
    for table in ("1", "9"):
        (t,) = build_tables(_published(rows).assign(table=table), collected, suite.runs, SUITE_REF)
        marks[table] = cells_frame([t]).set_index("metric")["mark"].to_dict()
        assert t.rows[0].verdict == "not reproduced"  # each bar is missed by one column, a different one
    assert marks["1"] == {"natural": "below", "pgd20": "within"}
    assert marks["9"] == {"natural": "within", "pgd20": "below"}


@pytest.fixture
def fidelity_suite():
    return load_suite("mnist-fidelity")


def _spec(suite, *only):
    (spec,) = filter_runs(suite.runs, list(only))
    return spec


@pytest.mark.parametrize("natural,pgd20,pgd100,verdict", [
    (99.05, 96.0, 95.0, "reproduced"),  # -0.05, -1.1, -1.2: every column within the bar
    (98.7, 97.1, 96.2, "not reproduced"),  # natural 0.4 below
    (99.1, 97.1, 94.5, "not reproduced"),  # PGD-100 1.7 below
])
def test_table1_catcw_cell_has_a_verdict_from_its_numbers(fidelity_suite, write_run_records, tmp_path,
                                                          natural, pgd20, pgd100, verdict):
    """The full-length CATcw run at eps_train 0.4 (the fidelity suite's seed 0, whose records are committed)
    fills Table 1's CATcw (eps_train=0.4) row: reproduced beside published, differences, a verdict with
    the numbers, '1 seed'; the section counts the table's rows by verdict."""
    spec = _spec(fidelity_suite, "method=cat-cw", "g_kl_reduction=batchmean", "seed=0")
    assert spec.name == "cat-cw-mnist-a213ca5433a6"
    write_run_records(tmp_path, spec, accuracies={"natural": natural, "pgd20": pgd20, "pgd100": pgd100})
    out = tmp_path / "report"
    cells = read_cells(render_report(fidelity_suite, tmp_path, out).read_text())
    for metric, value, published in (("natural", natural, 99.1), ("pgd20", pgd20, 97.1), ("pgd100", pgd100, 96.2)):
        text = cells[f"table1/{CATCW_04}/{metric}"]["text"]
        assert text == f"{value:.2f} (1 seed) paper {published} {value - published:+.2f}"
    cell = cells[f"table1/{CATCW_04}/verdict"]
    assert cell["mark"] == verdict.replace(" ", "-")
    assert cell["text"].startswith(f"{verdict} 1 seed, 2 more in the suite: Natural {natural:.2f} vs 99.1 "
                                   f"({natural - 99.1:+.2f}")
    assert f"PGD-100 {pgd100:.2f} vs 96.2 ({pgd100 - 96.2:+.2f}" in cell["text"]
    assert ("outside" in cell["text"]) == (verdict == "not reproduced")
    n_rep = int(verdict == "reproduced")
    assert cells["table1/counts"]["text"].startswith(
        f"7 rows: {n_rep} reproduced · {1 - n_rep} attempted (run, not within the bar) · 6 not run. "
        f"Bar: ±0.3 points natural, ±1.5 points robust")


def test_counts_and_verdicts_of_several_rows(fidelity_suite, write_run_records, tmp_path):
    """A run whose evaluation lacks a column is an attempt, not a reproduction; rows without runs are not run;
    the counts appear at the top of every paper table's section."""
    cw = _spec(fidelity_suite, "method=cat-cw", "g_kl_reduction=batchmean", "seed=0")
    cent = _spec(fidelity_suite, "method=cat-cent", "g_kl_reduction=batchmean")
    write_run_records(tmp_path, cw, accuracies={"natural": 99.0, "pgd20": 97.0, "pgd100": 96.0})
    write_run_records(tmp_path, cent, accuracies={"natural": 99.2, "pgd20": 96.8})
    runs, collected = load_runs(fidelity_suite, tmp_path)
    from cat_bench.paper import load_published

    tables = {t.id: t for t in build_tables(load_published(), collected, fidelity_suite.runs, "mnist-fidelity")}
    rows = {r.id: r for r in tables["1"].rows}
    assert rows[CATCW_04].verdict == "reproduced" and rows[CATCENT_04].verdict == "not reproduced"
    assert "PGD-100 not evaluated" in rows[CATCENT_04].verdict_text(tables["1"].columns)
    assert tables["1"].counts() == {"reproduced": 1, "not reproduced": 1, "not run": 5}
    assert tables["2"].counts() == {"reproduced": 0, "not reproduced": 0, "not run": len(tables["2"].rows)}
    html = render_report(fidelity_suite, tmp_path, tmp_path / "report").read_text()
    cells = read_cells(html)
    for t in tables.values():
        assert cells[f"{t.key}/counts"]["text"].startswith(f"{len(t.rows)} rows: ")
