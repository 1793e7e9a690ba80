"""Reports in a real browser: headless Chromium loads index.html from disk. The smoke report (a suite of
its own, no run of the paper) is titled by its suite, leads with its leaderboard and its grid over seeds,
shows no paper table; the report of tiny Table 1 runs shows the paper's tables after the suite's runs; every
image loads, and a screenshot is not blank.

Needs Debian's `chromium` (`.ci/run` installs it); skipped where it is absent.
"""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cat_bench.report import render_report
from cat_bench.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
# Appended to a copy of index.html: after load, writes into the DOM how many images failed to load.
IMAGE_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));
  const out = document.createElement('pre');
  out.id = 'image-check';
  out.textContent = JSON.stringify({total: imgs.length, broken: broken});
  document.body.appendChild(out);
});
</script>"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    render_report(load_suite("smoke"), REPO / "results" / "smoke", out)
    return out


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory):
    """A report whose runs fill rows of the paper's Table 1 (tests/fixtures: real tiny MNIST runs)."""
    out = tmp_path_factory.mktemp("paper-report")
    fixtures = REPO / "tests" / "fixtures"
    render_report(load_suite(str(fixtures / "report_suite.toml")), fixtures / "report_results", out)
    return out


def chromium(tmp_path, *args):
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def image_check(page, tmp_path):
    """Load a copy of `page` (beside it, so relative links resolve) and return its DOM and image counts."""
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    probe.unlink()
    check = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert check, f"the load event of {page.name} never ran"
    return dom, json.loads(html.unescape(check.group(1)))


def test_dom_holds_tables_and_every_image_loads(report, tmp_path):
    dom, images = image_check(report / "index.html", tmp_path)
    assert "<table" in dom
    assert re.search(r'<h1[^>]*>Suite smoke</h1>', dom)  # titled by the suite
    for section in ("Leaderboard", "Over seeds: mean ± std per configuration", "No run here matches a row"):
        assert section in dom
    assert 'class="paper-table"' not in dom  # no paper table for a suite that runs none of its rows
    assert "Every run is at chance level" not in dom  # the smoke runs learned (about 80% natural)
    assert dom.count("<tr") > 20
    assert images["broken"] == []
    total = images["total"]
    for page in sorted((report / "runs").glob("*.html")):  # run pages carry the training curves
        _, images = image_check(page, tmp_path)
        assert images["broken"] == [], page.name
        total += images["total"]
    assert total >= 7  # at least one figure per run of the smoke suite


def test_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", (report / "index.html").as_uri())
    assert shot.exists()
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, tables and figures, not a blank page
    assert max(count for count, _ in colours) < 0.95 * image.width * image.height


FIRST_SCREEN = """<script>
window.addEventListener('load', () => {
  const top = id => { const e = document.getElementById(id); return e ? e.getBoundingClientRect().top : null; };
  const tables = [...document.querySelectorAll('section.paper-table')].map(e => e.getBoundingClientRect().top);
  const out = document.createElement('pre');
  out.id = 'first-screen';
  out.textContent = JSON.stringify({leaderboard: top('leaderboard'), grid: top('grid'), runs: top('runs'), rest: top('rest'),
                                    first_paper_table: tables.length ? Math.min(...tables) : null,
                                    rows_shown: document.querySelectorAll('#leaderboard tbody tr').length,
                                    runs_overflow: (s => s.scrollWidth - s.clientWidth)(document.querySelector('#runs .scroll'))});
  document.body.appendChild(out);
});
</script>"""


def test_first_screen_shows_the_suite_own_results(report, tmp_path):
    """the leaderboard of the suite's runs starts on the first 1280x800 screen; the paper
    tables come after the suite's runs, and rows of other suites are collapsed at the end."""
    probe = report / "probe-first.html"
    probe.write_text((report / "index.html").read_text().replace("</body>", FIRST_SCREEN + "</body>"))
    dom = chromium(tmp_path, "--window-size=1280,800", "--virtual-time-budget=10000", "--dump-dom",
                   probe.as_uri()).stdout
    probe.unlink()
    found = re.search(r'<pre id="first-screen">(.*?)</pre>', dom, re.S)
    assert found, "the load event never ran"
    where = json.loads(html.unescape(found.group(1)))
    assert where["leaderboard"] is not None and where["leaderboard"] < 800 - 150  # heading plus the first rows
    assert where["rows_shown"] == 7
    assert where["leaderboard"] < where["grid"] < where["runs"]
    assert where["first_paper_table"] is None and where["rest"] is None
    assert where["runs_overflow"] <= 0  # the runs table fits, its last column is not cut off
    runs = re.search(r'<section id="runs">.*?</section>', dom, re.S).group(0)
    assert not re.search(r"</code>\s*\.", runs)  # no stray "." after the command box
    assert "cat-bench run --suite smoke --results" in html.unescape(runs)  # the complete command


def test_paper_tables_follow_the_suite_runs(paper_report, tmp_path):
    """With runs that fill paper rows: the paper's tables come after the suite's runs, each printed
    command names the results folder, and rows of other suites are collapsed at the end."""
    probe = paper_report / "probe-first.html"
    probe.write_text((paper_report / "index.html").read_text().replace("</body>", FIRST_SCREEN + "</body>"))
    dom = chromium(tmp_path, "--window-size=1280,800", "--virtual-time-budget=10000", "--dump-dom",
                   probe.as_uri()).stdout
    probe.unlink()
    where = json.loads(html.unescape(re.search(r'<pre id="first-screen">(.*?)</pre>', dom, re.S).group(1)))
    assert where["leaderboard"] < where["runs"] < where["first_paper_table"] < where["rest"]
    rest = html.unescape(re.search(r'<section id="rest">.*', dom, re.S).group(0))
    assert "<details" in rest and "Table 2" in rest and "cat-bench run --suite" in rest
    runs = [c for c in re.findall(r'<code class="cmd">(.*?)</code>', html.unescape(dom), re.S) if " run " in c]
    assert runs and all("--results" in c for c in runs)

def test_browser_sees_the_worst_case_column_and_reference_rows(tmp_path, write_run_records):
    """Chromium's DOM of a CIFAR-10 leaderboard: the worst-case column, and RobustBench's reference rows in a
    labelled tbody of their own after the measured rows, TRADES' eps 0.031 marked."""
    from test_report_evaluation import make_report

    (tmp_path / "made").mkdir()
    index, _ = make_report(tmp_path / "made", write_run_records)
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", index.as_uri()).stdout
    board = re.search(r'<section id="leaderboard">.*?</section>', dom, re.S).group(0)
    header = re.search(r"<thead>.*?</thead>", board, re.S).group(0)
    assert re.search(r'data-cell="leaderboard/cifar10/column/worst-case"[^>]*>Worst case</th>', header)
    measured, references = board.split('<tbody class="reference">')
    assert "Reference" in references and "not measured here" in references
    assert references.count('class="reference-row"') == 26 and "reference-row" not in measured
    assert re.search(r'data-cell="reference/Zhang2019Theoretically/eps" data-mark="eps-mismatch"', references)


LEADERBOARD_FIT = """<script>
window.addEventListener('load', () => {
  const heads = [...document.querySelectorAll('#leaderboard table.board thead th')];
  const out = document.createElement('pre');
  out.id = 'leaderboard-fit';
  out.textContent = JSON.stringify({width: window.innerWidth, columns: heads.length,
    hidden: heads.filter(th => th.getBoundingClientRect().right > window.innerWidth).map(th => th.textContent),
    overflow: Math.max(...[...document.querySelectorAll('#leaderboard .scroll')]
                            .map(s => s.scrollWidth - s.clientWidth))});
  document.body.appendChild(out);
});
</script>"""


def test_every_leaderboard_column_is_visible_at_1280_pixels(tmp_path):
    """The smoke runs beside an external model with a long path: at 1,280 pixels every column of the
    leaderboard, accuracies and flags included, is on screen without scrolling (screenshot kept)."""
    import torch

    from cat_bench.external import evaluate_external

    results = shutil.copytree(REPO / "results" / "smoke", tmp_path / "results")
    folder = tmp_path / "models-of-a-research-group" / "robust-mnist-classifiers-evaluated-against-cat-bench"
    folder.mkdir(parents=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    path = folder / "a-linear-model-with-a-long-descriptive-file-name-trained-elsewhere.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 28, 28),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), path)
    evaluate_external(str(path), "natural,fgsm,pgd20", dataset="mnist-mini", results=results, n_examples=100,
                      device="cpu", progress=False, log=lambda m: None)
    out = tmp_path / "report"
    render_report(load_suite("smoke"), results, out)
    probe = out / "probe-fit.html"
    probe.write_text((out / "index.html").read_text().replace("</body>", LEADERBOARD_FIT + "</body>"))
    dom = chromium(tmp_path, "--window-size=1280,1000", "--virtual-time-budget=10000", "--dump-dom",
                   probe.as_uri()).stdout
    chromium(tmp_path, f"--screenshot={tmp_path / 'leaderboard.png'}", "--window-size=1280,1000", probe.as_uri())
    found = re.search(r'<pre id="leaderboard-fit">(.*?)</pre>', dom, re.S)
    assert found, "the load event never ran"
    fit = json.loads(html.unescape(found.group(1)))
    assert fit["columns"] >= 12 and fit["hidden"] == [] and fit["overflow"] <= 0, fit
    assert (tmp_path / "leaderboard.png").is_file()
