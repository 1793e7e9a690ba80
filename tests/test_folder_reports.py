"""`results` and `report` without a suite (every run directory in a folder), and what a report of your
own runs shows: its title, the settings that tell runs apart, the grid over seeds, no paper table when
no run matches one, and a notice when every run is at chance level."""

import re
import shutil
from html import unescape
from pathlib import Path

import pytest

from cat_bench.report import read_cells, render_report
from cat_bench.suite import RunSpec, folder_suite, load_suite
from cat_bench.config import resolve_config
from test_failures import run as run_cli  # (code, stdout, stderr) of one CLI call

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "results" / "smoke" / "runs"


@pytest.fixture
def folder(tmp_path):
    """Two committed smoke runs as `cat-bench run --results DIR` leaves them (DIR/runs/NAME) and one as
    `cat-bench train --out DIR/first` leaves it (not named by its hash)."""
    at, cw, cent = (next(SMOKE.glob(f"{m}-mnist-mini-*")) for m in ("at", "cat-cw", "cat-cent"))
    shutil.copytree(at, tmp_path / "runs" / at.name)
    shutil.copytree(cw, tmp_path / "runs" / cw.name)
    shutil.copytree(cent, tmp_path / "first")
    (tmp_path / "notes").mkdir()  # a folder that is not a run is ignored
    return tmp_path


def test_folder_suite_finds_both_layouts(folder):
    suite, skipped = folder_suite(folder)
    assert skipped == []
    names = {s.name for s in suite.runs}
    assert "first" in names and len(names) == 3
    assert {s.config["method"] for s in suite.runs} == {"at", "cat-cw", "cat-cent"}


def test_results_without_a_suite_lists_every_run(folder, capsys):
    code, out, err = run_cli(["results", "--results", folder], capsys)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "method" not in line]
    assert sorted(r.split("|")[1].strip() for r in rows) == ["at", "cat-cent", "cat-cw"]
    assert "79.60" in out  # the AT smoke run's natural accuracy, read from its eval.json


def test_results_without_a_suite_on_an_empty_or_missing_folder(tmp_path, capsys):
    code, _, err = run_cli(["results", "--results", tmp_path], capsys)
    assert code == 2 and "no finished (trained and evaluated) run in" in err and "cat-bench train --out" in err
    code, _, err = run_cli(["results", "--results", tmp_path / "nowhere"], capsys)
    assert code == 2 and "nowhere: no such folder" in err


def test_report_without_a_suite(folder, capsys):
    code, out, err = run_cli(["report", "--results", folder], capsys)
    assert code == 0, err
    html = (folder / "report" / "index.html").read_text()
    cells = read_cells(html)
    assert cells["title"]["text"] == f"Runs in {folder}"
    assert "paper/none" in cells  # no run matches a paper row: no paper table, one line saying so
    assert 'class="paper-table"' not in html
    assert "--suite" not in " ".join(unescape(c) for c in re.findall(r'<code class="cmd">(.*?)</code>', html, re.S)
                                     if "run --suite" in c and "label=" not in c)
    for name in ("first", *(p.name for p in (folder / "runs").iterdir())):
        assert f'href="runs/{name}.html"' in html
    assert (folder / "report" / "runs" / "first.png").is_file()  # its curves: accuracy, losses, mask


def _spec(method: str, **settings) -> RunSpec:
    config = resolve_config(method, "mnist-mini", 0.1, epochs=2, n_train=200, batch_size=50, select_n=50, **settings)
    return RunSpec(config, ("natural", "pgd20"), 100, ("my grid",))


def test_own_suite_shows_settings_that_differ_and_the_grid(tmp_path, write_run_records):
    """Runs that differ in b and in epochs: the leaderboard's Settings cell names exactly those, its Label
    cell the block label; the grid over seeds averages the two seeds of one configuration."""
    specs = [_spec("cat-cent", overrides={"b": "0.3"}, seed=0), _spec("cat-cent", overrides={"b": "0.3"}, seed=1),
             _spec("cat-cent", overrides={"b": "0.1"}, seed=0)]
    for spec, nat in zip(specs, (80.0, 82.0, 70.0)):
        write_run_records(tmp_path, spec, history=[{"epoch": 1, "lr": 0.001, "nat_acc": nat / 100, "rob_acc": 0.1}],
                          accuracies={"natural": nat, "pgd20": 10.0})
    index = render_report(None, tmp_path, tmp_path / "report")
    cells = read_cells(index.read_text())
    settings = {k.split("/")[1]: v["text"] for k, v in cells.items() if k.endswith("/settings")}
    assert settings == {specs[0].name: "b=0.3", specs[1].name: "b=0.3", specs[2].name: "b=0.1"}
    grid = cells["grid"]["text"]
    assert "81.00 ± 1.41" in grid and "70.00" in grid  # seeds 0 and 1 of b=0.3 averaged; b=0.1 alone
    assert "notice/chance" not in cells


def test_chance_level_notice(tmp_path, write_run_records):
    """Every run below 1.5 x chance (15% on 10 classes): the notice; one run above it: none."""
    specs = [_spec("at", seed=0), _spec("at", seed=1)]
    for spec in specs:
        write_run_records(tmp_path, spec, history=[{"epoch": 1, "lr": 0.001, "nat_acc": 0.1, "rob_acc": 0.0}],
                          accuracies={"natural": 11.0, "pgd20": 0.0})
    cells = read_cells(render_report(None, tmp_path, tmp_path / "report").read_text())
    assert "chance (10%)" in cells["notice/chance"]["text"]
    write_run_records(tmp_path, _spec("at", seed=2), history=[{"epoch": 1, "lr": 0.001, "nat_acc": 0.5, "rob_acc": 0.0}],
                      accuracies={"natural": 50.0, "pgd20": 0.0})
    cells = read_cells(render_report(None, tmp_path, tmp_path / "report").read_text())
    assert "notice/chance" not in cells


def test_a_copied_run_folder_is_named_and_the_other_runs_are_tabled(folder, capsys):
    """`cp -r runs/A runs/A_backup`: the copy is left out and named; the table and the report show the runs."""
    original = next((folder / "runs").glob("at-*"))
    shutil.copytree(original, folder / "runs" / "first_backup")
    for command in ("results", "report"):
        code, out, err = run_cli([command, "--results", folder], capsys)
        assert code == 0, err
        assert f"first_backup: a copy of the run {original}" in err
    code, out, _ = run_cli(["results", "--results", folder], capsys)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "method" not in line]
    assert sorted(r.split("|")[1].strip() for r in rows) == ["at", "cat-cent", "cat-cw"]
    cells = read_cells((folder / "report" / "index.html").read_text())
    assert not any("first_backup" in cell for cell in cells)


def test_a_failed_report_build_leaves_the_old_report_whole(folder, capsys, monkeypatch):
    """A report is written whole or not at all: a build that fails leaves every file of the old one as
    it was, and no build folder behind."""
    import cat_bench.report

    assert run_cli(["report", "--results", folder], capsys)[0] == 0
    before = _files(folder / "report")
    at = next((folder / "runs").glob("at-*")) / "eval.json"
    at.write_text(at.read_text().replace('"accuracy": 0.796', '"accuracy": 0.5'))  # the next build changes its page

    def fails(path, text):
        if path.name == "index.html":
            raise OSError(28, "No space left on device", str(path))
        write(path, text)

    write = cat_bench.report._write
    monkeypatch.setattr(cat_bench.report, "_write", fails)
    code, _, err = run_cli(["report", "--results", folder], capsys)
    assert code == 1 and "No space left on device" in err
    assert _files(folder / "report") == before
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_results_of_a_suite_names_a_row_evaluated_by_another_suite(tmp_path, write_run_records, capsys):
    """Two suites share a run; suite B evaluated it (other attacks, other examples): suite A's table shows that
    evaluation with a note naming it and what A asks for."""
    suite = tmp_path / "a.toml"
    suite.write_text('description = "A"\n[[runs]]\nmethods = ["at"]\ndataset = "mnist-mini"\neps = [0.3]\n'
                     'epochs = 1\nattacks = ["natural", "pgd20"]\nn_examples = 40\n')
    (spec,) = load_suite(str(suite)).runs
    write_run_records(tmp_path / "r", spec, history=[{"epoch": 1, "nat_acc": 0.5, "rob_acc": 0.1}],
                      accuracies={"natural": 50.0, "fgsm": 20.0}, n_examples=30)
    code, out, err = run_cli(["results", "--suite", suite, "--results", tmp_path / "r"], capsys)
    assert code == 0, err
    assert f"note: {spec.name} shows an evaluation this suite did not ask for (natural, fgsm on 30 examples; " \
           f"the suite asks for natural, pgd20 on 40)" in err
