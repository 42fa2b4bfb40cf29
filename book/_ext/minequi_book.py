"""Two small fixes to how Sphinx renders this book, loaded from ``_config.yml``.

1. **Section titles inside module docstrings become rubrics.** minequi's module docstrings
   are written to be read with ``help()`` and in an editor, so they use reStructuredText
   section titles ("Actions\\n-------"). Placed on a page by ``automodule``, such titles would
   become real document sections: two modules with a section of the same name then collide
   as duplicate labels, and the docstring's section levels fight with the page's headings.
   A ``.. rubric::`` keeps the bold heading and the text, with none of that. Only module
   docstrings are touched; a title is an unindented line after a blank line, followed by an
   underline of one repeated punctuation character at least three long.

2. **Each inline script appears once per page.** With jupyter-book 1.0.4, sphinx-thebe 0.3.1
   and Sphinx 7.4, the inline script that declares ``const THEBE_JS_URL`` is added to every
   page twice, and the second copy raises "SyntaxError: Identifier 'THEBE_JS_URL' has already
   been declared" in the browser console (``tests/test_book_browser.py`` found it). Duplicate
   script entries are dropped from the page context before the page is written.
"""
from __future__ import annotations

import re

_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>:.])\1{2,}\s*$")


def sections_to_rubrics(lines: list[str]) -> list[str]:
    """Return ``lines`` with every ``Title / -----`` pair replaced by ``.. rubric:: Title``."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (line.strip() and not line[0].isspace() and _UNDERLINE.match(nxt)
                and (i == 0 or not lines[i - 1].strip())):
            out += [f".. rubric:: {line.strip()}", ""]
            i += 2
            if i < len(lines) and not lines[i].strip():
                i += 1
            continue
        out.append(line)
        i += 1
    return out


def _module_sections_to_rubrics(app, what, name, obj, options, lines):
    if what == "module":
        lines[:] = sections_to_rubrics(lines)


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # An inline script's filename is None or "" depending on how it was added.
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("autodoc-process-docstring", _module_sections_to_rubrics)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)  # after the others
    return {"parallel_read_safe": True, "parallel_write_safe": True}
