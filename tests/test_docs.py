"""The documents: README is a front door (under 250 lines) and every relative link of every document leads to a
file that exists and, with an #anchor, to a heading of it (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

from support.build import ROOT

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.M)


def documents() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("targets/**/README.md")),
             ROOT / "bench" / "README.md", ROOT / "runtime_c" / "README.md", ROOT / "tests" / "FAULTS.md"]  # fmt: skip
    return [path for path in found if path.is_file()]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # headings in code blocks are not headings
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in HEADING.findall(text)}


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            shown = destination.relative_to(ROOT) if destination.is_relative_to(ROOT) else destination.name
            broken.append(f"{target}: no heading #{anchor} in {shown}")
    return broken


def test_every_relative_link_leads_somewhere() -> None:
    broken = {str(path.relative_to(ROOT)): links for path in documents() if (links := broken_links(path))}
    assert not broken, broken


def test_the_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    assert "python3 -m pytest -q" in text  # the test command CI runs
    for document in ("docs/options.md", "docs/building.md", "docs/running.md", "docs/power.md", "docs/hil.md"):
        assert f"]({document})" in text, document


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section: here\n")
    page.write_text("# Page\n\n[ok](other.md#a-section-here) [gone](missing.md) [bad](other.md#nowhere) [in](#page)\n")
    assert broken_links(page) == ["missing.md: no such file", "other.md#nowhere: no heading #nowhere in other.md"]
