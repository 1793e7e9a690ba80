"""The smoke report in a real browser: headless Chromium loads index.html from disk, the DOM holds
the paper's tables and the leaderboard, every image loads, and a screenshot is not blank.

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
    for table in ("Table 1", "Table 2", "Table 8", "Leaderboard"):
        assert table in dom
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
