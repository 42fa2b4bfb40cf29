"""Every chapter notebook opens and ends the way the book promises: a "you will learn / you
need" box at the top, and at the end a summary, then exercises whose solutions are folded
away (input and output) and executed.

Chapters are the numbered notebooks, discovered with a glob (``book/[0-9][0-9]_*.ipynb``),
so the rules hold for chapters written later too. Other notebooks under ``book/`` (appendix
pages such as ``appendix_escnn.ipynb``) are executed and compared by nbval like the chapters
but have no exercises. For each chapter:

* **the box**: one of the first three cells is a markdown cell holding a MyST admonition whose
  title starts with "You will learn", e.g. ```` ```{admonition} You will learn / you need ````
  (backtick or colon fence, any fence length);
* there is a ``## Summary`` section and a ``## Exercises`` section (level-2 headings), the
  summary first, and neither is empty;
* the Exercises section holds at least one exercise and at least one solution, and every
  solution is *folded*, the answer included: a code cell tagged ``hide-cell`` (rendered as one
  collapsed toggle around the input AND the output) or a MyST dropdown (``:class: dropdown``
  admonition or ``{dropdown}``). A code cell tagged ``hide-input`` is rejected: it folds the
  code but prints the answer in the open;
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
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
FOLDED_TAGS = {"hide-cell"}        # folds the whole cell: input and output
HALF_FOLDED_TAGS = {"hide-input"}  # folds the code only: the printed answer stays visible
BOX_WITHIN = 3                     # the box is one of the first three cells
# A MyST admonition (backtick or colon fence) whose title starts with "You will learn".
LEARN_BOX = re.compile(r"^[ \t]*(`{3,}|:{3,})[ \t]*\{admonition\}[ \t]+You will learn", re.M)
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


def has_learn_box(nb) -> bool:
    """A markdown cell among the first ``BOX_WITHIN`` holds a "You will learn ..." admonition."""
    return any(c.cell_type == "markdown" and LEARN_BOX.search(c.source) for c in nb.cells[:BOX_WITHIN])


def check_chapter(nb) -> list[str]:
    """Problems with the opening and the ending of one chapter (empty list when it is fine)."""
    problems = []
    if not has_learn_box(nb):
        problems.append(f"no 'You will learn / you need' box in the first {BOX_WITHIN} cells (a markdown "
                        "cell with a MyST admonition titled 'You will learn ...', e.g. "
                        "```{admonition} You will learn / you need)")
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
    tags = lambda c: set(c.get("metadata", {}).get("tags", []))
    code_solutions = [c for c in cells if c.cell_type == "code" and FOLDED_TAGS & tags(c)]
    half_folded = [c for c in cells if c.cell_type == "code" and c not in code_solutions and HALF_FOLDED_TAGS & tags(c)]
    text_solutions = [c for c in cells if c.cell_type == "markdown" and DROPDOWN.search(c.source)]
    unfolded_code = [c for c in cells if c.cell_type == "code" and c not in code_solutions and c not in half_folded]
    exercise_text = [c for c in cells if c.cell_type == "markdown" and not DROPDOWN.search(c.source)]
    if not exercise_text:
        problems.append("the Exercises section states no exercise")
    if not code_solutions and not text_solutions:
        problems.append("no folded solution in the Exercises section "
                        "(tag the solution cell 'hide-cell', or use a dropdown admonition)")
    if not code_solutions:
        problems.append("no executed code solution in the Exercises section (solutions are tested by running them)")
    for c in code_solutions:
        if c.get("execution_count") is None:
            problems.append(f"solution cell was never executed: {c.source[:60]!r}")
    for c in half_folded:
        problems.append("solution tagged 'hide-input' folds the code but shows its output (the answer): "
                        f"tag it 'hide-cell': {c.source[:60]!r}")
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


BOX = "```{admonition} You will learn / you need\n* one thing\n\nYou need: chapter 1.\n```"
GOOD = [_md("# Chapter\n\n" + BOX), _md("## Summary\n\nWhat we learned."), _md("## Exercises\n\n1. Do it."),
        _md("**Solution** (click to show)"), _code("x = 1", tags=["hide-cell"])]


def test_checker_accepts_a_well_formed_chapter():
    assert check_chapter(_nb(*GOOD)) == []
    # Summary and Exercises headings in one markdown cell
    merged = _md("## Summary\n\nWhat we learned.\n\n## Exercises\n\n1. Do it.")
    assert check_chapter(_nb(GOOD[0], merged, *GOOD[3:])) == []
    dropdown = _md("```{admonition} Solution\n:class: dropdown\n\nBecause.\n```")
    assert check_chapter(_nb(*GOOD, dropdown)) == []
    # the box in a cell of its own (third cell), with a colon fence and a longer title
    colon = _md(":::{admonition} You will learn (and what you need first)\n* a thing\n:::")
    assert check_chapter(_nb(_md("# Chapter"), _md("Motivation."), colon, *GOOD[1:])) == []


def test_the_box_rule_is_exact():
    """The box is recognised by its title, as a MyST admonition, in the first three cells only."""
    title_only = _nb(_md("# Chapter\n\nYou will learn things."))
    assert not has_learn_box(title_only)  # prose, not an admonition
    assert not has_learn_box(_nb(_md("```{note} You will learn\nx\n```")))  # not an {admonition}
    assert not has_learn_box(_nb(_md("```{admonition} What you need\nx\n```")))  # wrong title
    assert has_learn_box(_nb(_md("````{admonition} You will learn / you need\nx\n````")))
    late = _nb(_md("# Chapter"), _md("a"), _md("b"), _md(BOX))
    assert not has_learn_box(late) and has_learn_box(_nb(*late.cells[1:]))
    assert not has_learn_box(_nb(_code(BOX)))  # a code cell does not render a box


@pytest.mark.parametrize("cells, expected", [
    (GOOD[:1] + GOOD[2:], "no '## Summary' section"),
    (GOOD[:2], "no '## Exercises' section"),
    (GOOD[:3], "no folded solution"),
    (GOOD[:4] + [_code("x = 1")], "unfolded code cell"),
    (GOOD[:4] + [_code("x = 1", tags=["hide-cell"], executed=False)], "never executed"),
    (GOOD[:4] + [_code("x = 1", tags=["hide-input"])], "tag it 'hide-cell'"),
    (GOOD[:4] + [_code("x = 1", tags=["hide-output"])], "unfolded code cell"),
    (GOOD[:3] + [_md("```{admonition} Solution\n:class: dropdown\n\nBecause.\n```")], "no executed code solution"),
    ([GOOD[0], GOOD[2], GOOD[1]] + GOOD[3:], "should come before"),
    (GOOD[:1] + [_md("## Summary")] + GOOD[2:], "'## Summary' section is empty"),
    ([_md("# Chapter")] + GOOD[1:], "no 'You will learn / you need' box"),
    ([_md("# Chapter"), _md("Motivation."), _md("More."), _md(BOX)] + GOOD[1:], "no 'You will learn / you need' box"),
], ids=["no-summary", "no-exercises", "no-solution", "unfolded", "not-executed", "hide-input",
        "hide-output", "text-only", "order", "empty-summary", "no-box", "box-too-late"])
def test_checker_rejects_a_chapter_that_breaks_a_rule(cells, expected):
    problems = check_chapter(_nb(*cells))
    assert any(expected in p for p in problems), problems
