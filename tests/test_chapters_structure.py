"""Every chapter notebook ends the way the book promises: a summary, then exercises whose
solutions are folded away and executed.

Chapters are discovered with a glob (``book/*.ipynb``), so the rules hold for chapters
written later too. For each chapter:

* there is a ``## Summary`` section and a ``## Exercises`` section (level-2 headings), the
  summary first, and neither is empty;
* the Exercises section holds at least one exercise and at least one solution, and every
  solution is *folded*: a code cell tagged ``hide-input`` (rendered as a collapsed "Show code
  cell source" toggle) or a MyST dropdown (``:class: dropdown`` admonition or ``{dropdown}``);
* at least one solution is a code cell, and every solution code cell was executed (it has an
  execution count; ``make test`` re-executes it with nbval and compares its outputs);
* every chapter is listed in ``_toc.yml``.

``tests/test_book_browser.py`` checks the rendered result: the sections exist on the page
and the solutions are collapsed.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
FOLDED_TAGS = {"hide-input", "hide-cell"}
DROPDOWN = re.compile(r"(:class:\s*dropdown)|(\{dropdown\})")
H2 = re.compile(r"^##\s+(.+?)\s*$", re.M)


def _sections(nb) -> dict[str, list]:
    """Cells grouped under the level-2 heading they follow ({title: [cells]}).

    A markdown cell may hold several headings: it is split at each one, and the text
    under a heading becomes a markdown cell of that section.
    """
    out: dict[str, list] = {}
    current = None

    def add(cell):
        if current is not None:
            out[current].append(cell)

    for cell in nb.cells:
        if cell.cell_type != "markdown" or not H2.search(cell.source):
            add(cell)
            continue
        pos = 0
        for m in H2.finditer(cell.source):
            before = cell.source[pos:m.start()].strip()
            if before:
                add(nbformat.v4.new_markdown_cell(before))
            current = m.group(1).strip()
            out.setdefault(current, [])
            pos = m.end()
        rest = cell.source[pos:].strip()
        if rest:
            add(nbformat.v4.new_markdown_cell(rest))
    return out


def check_chapter(nb) -> list[str]:
    """Problems with the ending of one chapter (empty list when it is fine)."""
    problems = []
    sections = _sections(nb)
    titles = list(sections)
    for name in ("Summary", "Exercises"):
        if name not in sections:
            problems.append(f"no '## {name}' section")
        elif not sections[name]:
            problems.append(f"the '## {name}' section is empty")
    if "Summary" in sections and "Exercises" in sections and titles.index("Summary") > titles.index("Exercises"):
        problems.append("'## Summary' should come before '## Exercises'")
    if "Exercises" not in sections:
        return problems

    cells = sections["Exercises"]
    code_solutions = [c for c in cells if c.cell_type == "code"
                      and FOLDED_TAGS & set(c.get("metadata", {}).get("tags", []))]
    text_solutions = [c for c in cells if c.cell_type == "markdown" and DROPDOWN.search(c.source)]
    unfolded_code = [c for c in cells if c.cell_type == "code" and c not in code_solutions]
    exercise_text = [c for c in cells if c.cell_type == "markdown" and not DROPDOWN.search(c.source)]
    if not exercise_text:
        problems.append("the Exercises section states no exercise")
    if not code_solutions and not text_solutions:
        problems.append("no folded solution in the Exercises section "
                        "(tag the solution cell 'hide-input', or use a dropdown admonition)")
    if not code_solutions:
        problems.append("no executed code solution in the Exercises section (solutions are tested by running them)")
    for c in code_solutions:
        if c.get("execution_count") is None:
            problems.append(f"solution cell was never executed: {c.source[:60]!r}")
    for c in unfolded_code:
        problems.append(f"unfolded code cell in the Exercises section (a solution in plain sight?): {c.source[:60]!r}")
    return problems


def test_there_are_chapters():
    assert CHAPTERS, "no chapter notebooks under book/"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_ends_with_summary_and_exercises(path):
    problems = check_chapter(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}:\n" + "\n".join(f"  - {p}" for p in problems)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_is_in_the_table_of_contents(path):
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    entry = path.relative_to(ROOT).with_suffix("").as_posix()
    assert re.search(rf"file:\s*{re.escape(entry)}\s*$", toc, re.M), f"{entry} is missing from _toc.yml"


# ------------------------------------------------------------------------------ negative controls
def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def _md(src):
    return nbformat.v4.new_markdown_cell(src)


def _code(src, tags=(), executed=True):
    c = nbformat.v4.new_code_cell(src, metadata={"tags": list(tags)} if tags else {})
    c.execution_count = 1 if executed else None
    return c


GOOD = [_md("# Chapter"), _md("## Summary\n\nWhat we learned."), _md("## Exercises\n\n1. Do it."),
        _md("**Solution** (click to show)"), _code("x = 1", tags=["hide-input"])]


def test_checker_accepts_a_well_formed_chapter():
    assert check_chapter(_nb(*GOOD)) == []
    # Summary and Exercises headings in one markdown cell
    merged = _md("## Summary\n\nWhat we learned.\n\n## Exercises\n\n1. Do it.")
    assert check_chapter(_nb(GOOD[0], merged, *GOOD[3:])) == []
    dropdown = _md("```{admonition} Solution\n:class: dropdown\n\nBecause.\n```")
    assert check_chapter(_nb(*GOOD, dropdown)) == []


@pytest.mark.parametrize("cells, expected", [
    (GOOD[:1] + GOOD[2:], "no '## Summary' section"),
    (GOOD[:2], "no '## Exercises' section"),
    (GOOD[:3], "no folded solution"),
    (GOOD[:4] + [_code("x = 1")], "unfolded code cell"),
    (GOOD[:4] + [_code("x = 1", tags=["hide-input"], executed=False)], "never executed"),
    (GOOD[:3] + [_md("```{admonition} Solution\n:class: dropdown\n\nBecause.\n```")], "no executed code solution"),
    ([GOOD[0], GOOD[2], GOOD[1]] + GOOD[3:], "should come before"),
    (GOOD[:1] + [_md("## Summary")] + GOOD[2:], "'## Summary' section is empty"),
], ids=["no-summary", "no-exercises", "no-solution", "unfolded", "not-executed", "text-only",
        "order", "empty-summary"])
def test_checker_rejects_a_chapter_that_breaks_a_rule(cells, expected):
    problems = check_chapter(_nb(*cells))
    assert any(expected in p for p in problems), problems
