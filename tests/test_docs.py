"""The README is a map and docs/ holds the detail: every relative link in README.md, docs/*.md and
results/README.md leads to a file of the repository (and to a heading there, when it names one)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "results" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are examples
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
        if anchor and dest.suffix == ".md":
            anchors = {_anchor(h) for h in re.findall(r"(?m)^#+ (.*)$", dest.read_text())}
            assert anchor in anchors, f"{page.relative_to(REPO)} links to #{anchor}, not a heading of {path}"


def test_readme_is_a_map_that_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    headings = re.findall(r"(?m)^## (.*)$", readme)
    assert headings[:4] == ["Status", "Install", "Quick start", "Read more"]
