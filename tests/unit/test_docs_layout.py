"""Where the documentation lives: the README is a short front page that keeps the two
quick-start commands, every page under docs/ is in the site's navigation, and nothing in the
repository points at paths outside it. (``mkdocs build --strict`` in CI checks links and
anchors; these are the fast local checks.)"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
QUICK_START = (
    "python3 -m pip install -e . && redbatch demo",
    "python3 -m pip install -e '.[dev]' && python3 -m pytest",
)
# Spelled in two parts so that this file does not match its own search.
OUTSIDE = "shared" + "/"


def test_readme_is_a_front_page_with_the_quick_start() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move sections to docs/"
    starts = [line.split("#", 1)[0].strip() for line in lines]
    for command in QUICK_START:
        assert command in starts, command


def nav_pages(nav: list[object]) -> set[str]:
    pages: set[str] = set()
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages |= nav_pages(value)
        else:
            pages.add(str(value))
    return pages


def test_every_docs_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml nav"
    assert listed - pages == set(), "nav entries without a page"


def test_nothing_points_outside_the_repository() -> None:
    files = [
        README,
        *DOCS.rglob("*.md"),
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
    ]
    offenders = [str(f.relative_to(ROOT)) for f in files if OUTSIDE in f.read_text("utf-8")]
    assert offenders == []
