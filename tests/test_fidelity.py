"""The report's Fidelity section: runs beside the authors' log, verdicts computed from the numbers."""

import re
from html import unescape

import pytest

from cat_bench import records
from cat_bench.paper import load_authors_log
from cat_bench.report import render_report
from cat_bench.report.fidelity import EpochRow, FidelityRun, verdict
from cat_bench.settings import Settings
from cat_bench.suite import load_suite


def test_authors_log_is_method_md():
    """results/paper/authors_log.csv holds docs/method.md s3's numbers: CATcw, eps 0.4, error % after epochs 1, 2, 10."""
    log = load_authors_log()
    got = {(r.epoch, r.metric): r.error for r in log.itertuples()}
    assert got == {(1, "natural"): 3.8, (1, "pgd20"): 21.5, (2, "natural"): 2.4, (2, "pgd20"): 12.1,
                   (10, "natural"): 1.3, (10, "pgd20"): 5.2}
    assert set(log["method"]) == {"cat-cw"} and set(log["eps"]) == {0.4} and set(log["dataset"]) == {"mnist"}
    assert list(log.columns) == ["method", "dataset", "eps", "epoch", "metric", "error", "accuracy"]
    assert log["accuracy"].tolist() == pytest.approx([100 - e for e in log["error"]])


def _run(rows):
    return FidelityRun(run=None, identity={}, rows=rows, trace=[], selection_n=None)


@pytest.mark.parametrize("rows,kind", [
    ([EpochRow(1, 96.5, 79.0, 0.4, None, 96.2, 78.5), EpochRow(2, 97.0, 85.0, 0.3, None, 97.6, 87.9)], "reproduced"),
    ([EpochRow(1, 96.5, 74.0, 0.4, None, 96.2, 78.5)], "not reproduced"),  # PGD-20 4.5 points low
    ([EpochRow(1, 95.0, 78.5, 0.4, None, 96.2, 78.5)], "not reproduced"),  # natural 1.2 points low
    ([EpochRow(1, 97.0, 0.0, 3e-7, "collapsed", 96.2, 78.5)], "mask collapsed"),
    ([EpochRow(1, 98.0, 60.0, 0.9999, "saturated", 96.2, 78.5)], "mask saturated"),
    ([EpochRow(1, 96.0, 80.0, 0.9999, "saturated", 96.2, 78.5)], "reproduced, mask saturated"),
    ([EpochRow(3, 98.0, 60.0, 0.5, None, None, None)], "no log"),
    ([EpochRow(1, 95.4, 72.8, 0.3, None, 96.2, 78.5), EpochRow(2, 97.7, 84.8, 0.4, None, 97.6, 87.9),
      EpochRow(10, 98.8, 94.6, 0.8, None, 98.7, 94.8)], "reproduced at epoch 10, not at epochs 1 and 2"),
    ([EpochRow(1, 95.4, 72.8, 0.3, None, 96.2, 78.5), EpochRow(10, 98.8, 94.6, 0.9999, "saturated", 98.7, 94.8)],
     "reproduced at epoch 10, not at epoch 1, mask saturated"),
])
def test_verdicts_follow_the_numbers(rows, kind):
    fr = _run(rows)
    got, text = verdict(fr, has_log=rows[0].log_natural is not None)
    assert got == kind
    if "mask" in kind:
        assert "x_cal = x" in text
    if rows[0].log_pgd20 is not None:
        assert any(f"the log's {r.log_pgd20:.1f}%" in text for r in rows)  # the log's number is quoted


def test_excursions_name_where_the_mask_left_the_healthy_band():
    from cat_bench.methods import CATcw

    trace = [{"epoch": 1, "batch": b, "mask_mean": m} for b, m in
             [(1, 0.5), (11, 0.004), (21, 1e-7), (31, 0.3), (41, 0.995), (51, 0.999)]]
    trace.append({"epoch": 2, "batch": 1, "mask_mean": 0.9999})
    assert CATcw.excursions(trace) == [("collapsed", (1, 11), (1, 21), True), ("saturated", (1, 41), (2, 1), False)]
    fr = _run([EpochRow(1, 96.1, 75.0, 0.49, None, 96.2, 78.5)])
    fr.trace = trace
    kind, text = verdict(fr, has_log=True)
    assert kind == "not reproduced" and "collapsed from epoch 1, batch 11 to batch 21, then recovered" in text
    assert "saturated from epoch 1, batch 41 to epoch 2, batch 1 (the last traced batch)" in text


def test_a_one_batch_excursion_is_named_once():
    fr = _run([EpochRow(1, 96.1, 75.0, 0.49, None, 96.2, 78.5)])
    fr.trace = [{"epoch": 1, "batch": b, "mask_mean": m} for b, m in [(171, 0.9), (181, 0.995), (191, 0.9)]]
    _, text = verdict(fr, has_log=True)
    assert "The traced mask saturated at epoch 1, batch 181 (one traced batch), then recovered." in text


def test_fidelity_section_renders_from_records(tmp_path):
    """A tiny fidelity-labelled CATcw run on mnist-mini, stopped after epoch 1: the index gets a Fidelity
    section and fidelity.html a per-epoch table, the mask trajectory and Figure 2 from last.pt."""
    suite_file = tmp_path / "fid.toml"
    suite_file.write_text('description = "tiny fidelity"\n[[runs]]\nlabel = "Fidelity"\nmethods = ["cat-cw"]\n'
                          'dataset = "mnist-mini"\neps = [0.4]\nn_train = 60\nbatch_size = 20\nselect_n = 20\n'
                          'attacks = ["natural"]\n')
    suite = load_suite(str(suite_file))
    from cat_bench.orchestrate import run_local

    results = tmp_path / "results"
    assert run_local(results, suite.runs, Settings("cpu", progress=False, stop_after_epoch=1),
                     log=lambda m: None) == {suite.runs[0].name: "stopped"}
    out = tmp_path / "report"
    render_report(suite, results, out)
    index = (out / "index.html").read_text()
    assert 'id="fidelity"' in index and "fidelity.html" in index
    page = (out / "fidelity.html").read_text()
    (verdict_attr,) = re.findall(r'<section id="[^"]+" data-verdict="([^"]+)"', page)
    assert verdict_attr in ("no log", "mask collapsed", "mask saturated")  # mnist-mini has no published log
    assert 'data-epoch="1"' in page and (out / "figures" / "fidelity_mask.png").is_file()
    assert f"fidelity_figure2_{suite.runs[0].name}.png" in page
    run = results / "runs" / suite.runs[0].name
    assert not (run / records.DONE).exists() and records.read_jsonl(run / records.TRACE)


def test_committed_fidelity_readme_matches_the_records():
    """results/fidelity/README.md's table is scripts/fidelity_table.py's output on the committed records."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = repo / "results" / "fidelity" / "README.md"
    table = _script("fidelity_table").markdown("mnist-fidelity", repo / "results" / "fidelity")
    assert table.count("\n| cat-") >= 2  # at least one epoch of two runs is committed
    assert table in readme.read_text()


def test_committed_epoch_tables_match_the_records():
    """The per-epoch tables of results/fidelity/README.md (the Table 1 run) and results/fidelity-rerun/README.md
    (the same run on another machine, beside the first) are `fidelity_table.py --epochs`' output."""
    from pathlib import Path

    fidelity = Path(__file__).resolve().parents[1] / "results" / "fidelity"
    rerun, run = fidelity.with_name("fidelity-rerun"), "cat-cw-mnist-a213ca5433a6"
    epoch_table = _script("fidelity_table").epoch_table
    first = epoch_table(run, fidelity)
    assert first.count("\n") == 2 + 40 and first in (fidelity / "README.md").read_text()
    if (rerun / "runs" / run).is_dir():
        assert epoch_table(run, rerun, beside=fidelity) in (rerun / "README.md").read_text()


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mask_variant_episodes_name_the_traced_batches_off_the_band():
    episodes = _script("mask_variants")._episodes
    trace = [{"batch": b, "mask_mean": m} for b, m in ((1, 0.5), (11, 1e-4), (21, 1e-5), (31, 0.4), (41, 0.995), (51, 0.7))]
    assert episodes(trace) == "collapsed 11-21; saturated 41-41"
    assert episodes(trace[:1]) == "none"


def test_committed_mask_variant_table_matches_the_records():
    """results/fidelity/README.md quotes scripts/mask_variants.py's table of the committed variant records."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    table = _script("mask_variants").table(repo / "results" / "fidelity" / "variants")
    assert table.count("\n| ") >= 4  # the reference and three variants
    assert table in (repo / "results" / "fidelity" / "README.md").read_text()


@pytest.mark.parametrize("epoch10,within", [((98.5, 94.0), True), ((98.7, 91.5), False)])
def test_a_twelve_epoch_history_shows_epoch_10_beside_the_log(tmp_path, write_run_records, epoch10, within):
    """A fabricated 12-epoch history of the fidelity suite's CATcw run (still training: no `done`): the page
    and the README table list the log's epochs 1, 2, 10, the selected epoch 11 and the last epoch 12, not
    every epoch; epoch 10 stands beside the log's 98.7 / 94.8 with its own verdict, which the run's names."""
    suite = load_suite("mnist-fidelity")
    (spec,) = [s for s in suite.runs if s.name == "cat-cw-mnist-a213ca5433a6"]
    accs = {1: (96.2, 78.5), 2: (97.6, 87.9), 10: epoch10, 11: (99.0, 95.5), 12: (98.9, 95.0)}
    history = [{"epoch": e, "nat_acc": accs.get(e, (97.0 + 0.1 * e, 88.0 + 0.3 * e))[0] / 100,
                "rob_acc": accs.get(e, (97.0 + 0.1 * e, 88.0 + 0.3 * e))[1] / 100, "train": {"mask_mean": 0.6}}
               for e in range(1, 13)]
    write_run_records(tmp_path, spec, history=history)
    out = tmp_path / "report"
    render_report(suite, tmp_path, out)
    page = (out / "fidelity.html").read_text()
    section = re.search(r'<section id="cat-cw-mnist-a213ca5433a6".*?</section>', page, re.S).group(0)
    assert re.findall(r'data-epoch="(\d+)"', section) == ["1", "2", "10", "11", "12"]
    row10 = re.search(r'<tr data-epoch="10"(.*?)</tr>', section, re.S).group(1)
    cells = [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row10, re.S)]
    mark = "within" if within else "<strong>outside</strong>"
    assert cells[:9] == ["10", "log epoch", f"{epoch10[0]:.1f}", "98.7", f"{epoch10[0] - 98.7:+.1f}",
                         f"{epoch10[1]:.1f}", "94.8", f"{epoch10[1] - 94.8:+.1f}", mark]
    assert re.search(r'<tr data-epoch="11"[^>]*><td class="num">11</td><td>selected</td>', section)
    assert re.search(r'<tr data-epoch="12"[^>]*><td class="num">12</td><td>last</td>', section)
    text = " ".join(unescape(section).split())
    assert "the last one trained (5 of 12 epochs; the accuracy plot above draws every epoch)" in text
    kind = "reproduced" if within else "reproduced at epochs 1 and 2, not at epoch 10"
    assert f'data-verdict="{kind}"' in section
    assert (f"epoch 10 {'within' if within else 'outside'}: natural {epoch10[0]:.1f}% vs 98.7%"
            f" ({epoch10[0] - 98.7:+.1f}), PGD-20 {epoch10[1]:.1f}% vs the log's 94.8%") in text

    table = _script("fidelity_table").markdown("mnist-fidelity", tmp_path)
    lines = [line for line in table.splitlines() if line.startswith("| cat-cw-mnist-a213ca5433a6 |")]
    assert [line.split(" | ")[2:4] for line in lines] == [["1", "log epoch"], ["2", "log epoch"], ["10", "log epoch"],
                                                          ["11", "selected"], ["12", "last"]]
    assert lines[2].split(" | ")[4:11] == [f"{epoch10[0]:.1f}", "98.7", f"{epoch10[0] - 98.7:+.1f}",
                                           f"{epoch10[1]:.1f}", "94.8", f"{epoch10[1] - 94.8:+.1f}",
                                           "within" if within else "**outside**"]
