"""The README and docs/ link to files and sections that exist.

A page moved or a heading renamed leaves links that point nowhere; these tests read every relative
markdown link (and its #anchor, as GitHub derives it from a heading), every section a page names in
quotes beside a link to it ("Title" in [page](page.md), or [page](page.md), "Title"), and every docs page
(and section: docs/<page>.md, "Title") the code names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = sorted([*REPO.glob("igniter_opt/**/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("tests/*.py")])
DOCS_IN_CODE = re.compile(r'docs/([\w\-]+\.md)(?:,?\s*\(?\s*"([^"]{6,160})")?')
NAMED_SECTION = re.compile(r'"([^"\n]{6,120})" in \[[^\]]*\]\(([\w\-./]+\.md)\)'
                           r'|\[[^\]]*\]\(([\w\-./]+\.md)\),\s+"([^"\n]{6,120})"')


def _headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]


def _has_section(page: Path, title: str) -> bool:
    """Whether a heading of ``page`` begins with ``title`` (runs of whitespace in either count as one space: a
    title named in a docstring may wrap)."""
    title = " ".join(title.split())
    return any(" ".join(h.split()).startswith(title) for h in _headings(page))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_anchor_follows_githubs_rule() -> None:
    assert _anchor("Applying a plan change (`--diff OLD.json NEW.json`)") == (
        "applying-a-plan-change---diff-oldjson-newjson")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    broken = []
    for m in LINK.finditer(page.read_text()):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in {_anchor(h) for h in _headings(resolved)}:
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_section_named_beside_a_link_exists_there(page: Path) -> None:
    missing = []
    for m in NAMED_SECTION.finditer(page.read_text()):
        title, path = m.group(1) or m.group(4), m.group(2) or m.group(3)
        target = page.parent / path
        if target.exists() and not _has_section(target, title):
            missing.append(f'"{title}" in {path}')
    assert not missing, f"{page.name} names sections that do not exist: " + "; ".join(missing)


def test_every_docs_page_and_section_the_code_names_exists() -> None:
    missing = []
    for source in CODE:
        for m in DOCS_IN_CODE.finditer(source.read_text()):
            page = REPO / "docs" / m.group(1)
            if not page.exists():
                missing.append(f"{source.relative_to(REPO)}: docs/{m.group(1)}")
                continue
            title = m.group(2)
            if title and not _has_section(page, title):
                missing.append(f'{source.relative_to(REPO)}: "{title}" in docs/{m.group(1)}')
    assert not missing, "the code names docs that do not exist: " + "; ".join(missing)
