"""The rendered book, checked the way a reader meets it: in a real (headless) browser.

The module builds the book from the current sources into a temporary folder, with the
same command and flags as ``make book`` (warnings are errors), serves the result on
127.0.0.1 and opens every page in Debian's Chromium through chromedriver (selenium). For
each page it asserts that

* the page loads and has content;
* MathJax, served from the site itself (``_static/mathjax``, installed at build time by the
  ``sphinx-mathjax-offline`` package), typeset every math element, reported no TeX error,
  and no raw TeX (``$...$``, ``\\(...\\)``, ``\\begin{...}``) is left in the prose;
* every image loaded (``complete`` and a non-zero natural width);
* nothing was requested from outside the site (the browser cannot resolve any host name,
  so a CDN dependency fails here even on a machine with internet) and the console shows
  no error;
* on chapter pages (one per numbered notebook ``book/NN_*.ipynb``), the Summary and Exercises
  sections exist and the solutions are folded *whole*: no code cell of the Exercises section
  shows its input or its output until the reader opens it (solutions are tagged ``hide-cell``;
  a ``hide-input`` cell, which folds the code but prints the answer, is reported).

A few pages are also opened straight from the disk (``file://``), as a reader without a
server would. A static pass checks that every internal link and anchor of every page
resolves, another test shows that a dead link, an unknown label or an unknown citation key
stops the build, and ``test_checker_catches_broken_pages`` feeds deliberately broken pages
(raw ``$x$``, a page without MathJax, a TeX error, an undefined macro, a missing image, a
JavaScript error, a CDN script, unfolded solutions, a ``hide-input`` solution whose answer is in
plain sight, dead links) to the same checkers to show
that each kind of failure is caught.

Needs ``chromium`` and ``chromedriver`` (Debian packages ``chromium`` and ``chromium-driver``,
installed by ``.ci/install-system-deps``). Without them the tests skip, except under CI
(``CI`` set), where they fail.
"""
from __future__ import annotations

import functools
import http.server
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
# Flags for a quiet, self-contained headless Chromium. The host-resolver rule makes every
# host name unresolvable, so the site must be complete on its own (it is served by IP).
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--window-size=1280,900", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def _require_browser():
    missing = [name for name, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER),
                                     ("selenium", importlib.util.find_spec("selenium"))) if not ok]
    if missing:
        msg = (f"browser test needs {', '.join(missing)} (Debian: apt-get install chromium "
               f"chromium-driver; pip: the project's [test] extra)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


# ------------------------------------------------------------------------------ fixtures
_BUILD: dict[str, object] = {}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The book, built from the current sources exactly as ``make book`` builds it (once)."""
    if "error" not in _BUILD and "html" not in _BUILD:
        out = tmp_path_factory.mktemp("book")
        cmd = [str(JUPYTER_BOOK), "build", str(ROOT), "--path-output", str(out),
               "--warningiserror", "--keep-going", "--quiet"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        html = out / "_build" / "html"
        if r.returncode != 0 or not (html / "index.html").exists():
            _BUILD["error"] = f"book build failed ({' '.join(cmd)}):\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
        else:
            _BUILD["html"] = html
    if "error" in _BUILD:
        pytest.fail(str(_BUILD["error"]), pytrace=False)
    return _BUILD["html"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


class _Server:
    """Serve ``root`` on 127.0.0.1 from a background thread."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


# ------------------------------------------------------------------------------ the checkers
# Runs in the page after the load event: waits for MathJax's first typeset, for every image
# and for the web fonts, then reports what the checks below need.
_INSPECT_JS = r"""
const done = arguments[arguments.length - 1];
const report = {mathjax: null};
const skip = 'pre, code, kbd, samp, script, style, textarea, mjx-container, .math';
(async () => {
  const nMath = document.querySelectorAll('.math').length;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; report.mathjax = 'ok'; }
    catch (e) { report.mathjax = 'failed: ' + e; }
  } else {
    report.mathjax = nMath ? 'not loaded' : 'not needed';
  }
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
      new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  if (document.fonts) { await document.fonts.ready; }
  const math = Array.from(document.querySelectorAll('.math'));
  report.n_math = math.length;
  report.untypeset = math.filter(m => !m.querySelector('mjx-container'))
                         .map(m => m.textContent.trim().slice(0, 80));
  report.tex_errors = Array.from(document.querySelectorAll('mjx-merror'))
                         .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
  // MathJax's "noundefined" package shows an unknown macro as its name in red, silently.
  // (read from the MathML copy that MathJax keeps for screen readers).
  report.undefined_macros = Array.from(document.querySelectorAll('mjx-container mtext[mathcolor="red"]'))
                         .filter(e => e.textContent.startsWith('\\'))
                         .map(e => e.textContent);
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode;
    if (n.parentElement && !n.parentElement.closest(skip)) texts.push(n.nodeValue);
  }
  report.text = texts.join(' ');
  report.images = Array.from(document.images).map(i => ({
      src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  report.resources = performance.getEntriesByType('resource').map(e => e.name);
  report.title = document.title;
  report.main_text = (document.querySelector('main, article, [role=main]') || document.body)
                         .innerText.trim().length;
  // Chapter pages: are the solutions folded, input AND output (inside a closed <details>)?
  const ex = document.querySelector('section#exercises');
  const shown = c => c.checkVisibility ? c.checkVisibility() : !c.closest('details:not([open])');
  report.exercises = ex ? {
      folded: ex.querySelectorAll('details:not([open])').length,
      visible_inputs: Array.from(ex.querySelectorAll('.cell .cell_input')).filter(shown).length,
      visible_outputs: Array.from(ex.querySelectorAll('.cell .cell_output')).filter(shown).length,
      hide_input_cells: ex.querySelectorAll('.cell.tag_hide-input').length,
  } : null;
  report.summary = !!document.querySelector('section#summary');
  done(report);
})().catch(e => done({error: String(e)}));
"""

# Raw TeX that MathJax did not see: $...$ / $$...$$ with something TeX-like inside,
# \( \) and \[ \] delimiters, \begin{...} environments.
_RAW_TEX = re.compile(r"\$\$?[^$\s][^$]{0,200}?\$|\\\(|\\\)|\\\[|\\\]|\\begin\{")


def check_page(driver, url: str, origin: str, *, chapter: bool = False) -> list[str]:
    """Open ``url`` and return a list of problems (empty when the page renders right)."""
    driver.get_log("browser")  # drop messages of earlier pages
    driver.get(url)
    r = driver.execute_async_script(_INSPECT_JS)
    if "error" in r:
        return [f"inspection script failed: {r['error']}"]
    problems = []
    if r["main_text"] == 0 or "404" in r["title"] or "Error response" in r["title"]:
        problems.append(f"page did not load (title {r['title']!r})")
    if r["mathjax"] not in ("ok", "not needed"):
        problems.append(f"MathJax {r['mathjax']}")
    for tex in r["untypeset"]:
        problems.append(f"equation not typeset: {tex!r}")
    for msg in r["tex_errors"]:
        problems.append(f"MathJax TeX error: {msg!r}")
    for macro in r["undefined_macros"]:
        problems.append(f"undefined TeX macro: {macro}")
    for m in _RAW_TEX.finditer(r["text"]):
        snippet = r["text"][max(0, m.start() - 30): m.end() + 30].replace("\n", " ")
        problems.append(f"raw TeX left in the text: ...{snippet}...")
    for img in r["images"]:
        if not img["ok"]:
            problems.append(f"image did not load: {img['src']}")
    for res in r["resources"]:
        if not res.startswith(origin):
            problems.append(f"requested from outside the site: {res}")
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"console error: {entry['message'][:300]}")
    if chapter:
        if not r["summary"]:
            problems.append("chapter has no rendered '## Summary' section")
        if r["exercises"] is None:
            problems.append("chapter has no rendered '## Exercises' section")
        else:
            if r["exercises"]["folded"] == 0:
                problems.append("no folded solution in the Exercises section")
            if r["exercises"]["visible_inputs"] or r["exercises"]["visible_outputs"]:
                problems.append(f"a solution is displayed unfolded ({r['exercises']['visible_inputs']} code "
                                f"inputs and {r['exercises']['visible_outputs']} outputs visible in the Exercises section)")
            if r["exercises"]["hide_input_cells"]:
                problems.append("a solution is tagged hide-input: its output (the answer) is not folded; tag it hide-cell")
    return problems


def check_links(site: Path) -> list[str]:
    """Every relative link, image, script and stylesheet of every page resolves (anchors too)."""
    import html.parser

    class _Collect(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.refs = set(), []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id"):
                self.ids.add(a["id"])
            if tag == "a" and a.get("name"):
                self.ids.add(a["name"])
            for t, attr in (("a", "href"), ("img", "src"), ("script", "src"), ("link", "href")):
                if tag == t and a.get(attr):
                    self.refs.append((tag, a[attr]))

    parsed: dict[Path, _Collect] = {}

    def parse(page: Path) -> _Collect:
        if page not in parsed:
            parsed[page] = _Collect()
            parsed[page].feed(page.read_text(encoding="utf-8"))
        return parsed[page]

    problems = []
    for page in sorted(_pages(site)):
        for tag, url in parse(page).refs:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme or url.startswith("//"):
                if tag != "a" and parts.scheme != "data":
                    problems.append(f"{page.relative_to(site)}: <{tag}> loads {url} from outside the site")
                continue
            target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(site)}: broken link {url}")
            elif parts.fragment and target.suffix == ".html" and _inside(target, site) \
                    and urllib.parse.unquote(parts.fragment) not in parse(target).ids:
                problems.append(f"{page.relative_to(site)}: missing anchor {url}")
    return problems


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _pages(site: Path):
    """The HTML pages of the site (not the theme's templates under _static)."""
    return [p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts]


def _chapter_pages(site: Path) -> set[Path]:
    """Pages of the numbered chapters (appendix notebooks have no exercises)."""
    return {site / nb.relative_to(ROOT).with_suffix(".html")
            for nb in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")}


# ------------------------------------------------------------------------------ the tests
def test_every_page_renders_in_the_browser(site, browser):
    server = _Server(site)
    try:
        chapters = _chapter_pages(site)
        missing = sorted(str(p.relative_to(site)) for p in chapters if not p.exists())
        assert not missing, f"chapter notebooks without a page (not in _toc.yml?): {missing}"
        pages = sorted(_pages(site))
        failures = {}
        for page in pages:
            rel = page.relative_to(site).as_posix()
            problems = check_page(browser, server.base + rel, server.base, chapter=page in chapters)
            if problems:
                failures[rel] = problems
        assert not failures, "pages that do not render right:\n" + "\n".join(
            f"  {page}:\n" + "\n".join(f"    - {p}" for p in probs) for page, probs in failures.items())
        # The checks saw real content: MathJax was served from the site itself.
        assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
        assert len(pages) >= 5
    finally:
        server.close()
    # Read offline, straight from the disk (file:// URLs, no server), the book still renders.
    for rel in ["index.html", "book/conventions.html"] + sorted(
            p.relative_to(site).as_posix() for p in _chapter_pages(site))[:1]:
        problems = check_page(browser, (site / rel).as_uri(), "file://")
        assert not problems, f"{rel} opened from disk:\n" + "\n".join(problems)


def test_internal_links_and_anchors_resolve(site):
    problems = check_links(site)
    assert not problems, "\n".join(problems)


def test_api_page_documents_every_exported_name(site):
    import minequi

    api = (site / "book" / "api.html").read_text(encoding="utf-8")
    names = [n for n in dir(minequi) if not n.startswith("_") and not inspect.ismodule(getattr(minequi, n))]
    assert names, "minequi exports nothing?"
    problems = []
    for name in names:
        obj = getattr(minequi, name)
        if not (inspect.getdoc(obj) or "").strip():
            problems.append(f"minequi.{name} has no docstring")
        full = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', name)}"
        if f'id="{full}"' not in api:
            problems.append(f"minequi.{name} ({full}) has no entry on the API page (book/api.md)")
    # And every name in the __all__ of every module on the page.
    listed = re.findall(r"^\.\. automodule:: (\S+)\s*$", (ROOT / "book" / "api.md").read_text(), re.M)
    for modname in listed:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if not (inspect.getdoc(obj) or "").strip():
                problems.append(f"{modname}.{name} has no docstring")
            if f'id="{modname}.{name}"' not in api and f'id="{obj.__module__}.{name}"' not in api:
                problems.append(f"{modname}.{name} has no entry on the API page")
    assert not problems, "\n".join(problems)


def test_api_page_lists_every_module():
    """Each module of minequi (but the conventions, which have their own page, and the
    sympy-based minequi.symbolic) has an automodule entry in book/api.md."""
    api = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\.\. automodule:: (\S+)\s*$", api, re.M))
    modules = {f"minequi.{p.stem}" for p in (ROOT / "minequi").glob("*.py")
               if not p.stem.startswith("_") and p.stem != "conventions"}
    assert modules - listed == set(), f"add these modules to book/api.md: {sorted(modules - listed)}"
    conventions = (ROOT / "book" / "conventions.md").read_text(encoding="utf-8")
    assert ".. automodule:: minequi.conventions" in conventions


def test_build_fails_on_a_broken_reference_or_a_missing_citation(tmp_path):
    """A throwaway book with this book's configuration: a dead link, an unknown label and an
    unknown citation key each stop the build (warnings are errors), and are named."""
    book = tmp_path / "book"
    (book / "book").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    shutil.copy(ROOT / "references.bib", book / "references.bib")
    shutil.copytree(ROOT / "book" / "_ext", book / "book" / "_ext")
    shutil.copytree(ROOT / "book" / "_static", book / "book" / "_static")
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/broken\n")
    (book / "book" / "intro.md").write_text("# Intro\n\nFine: {cite}`cohen2016group`.\n\n```{bibliography}\n```\n")
    (book / "book" / "broken.md").write_text(
        "# Broken\n\nA [dead link](no_such_page.md), an unknown label {ref}`no-such-label` "
        "and an unknown paper {cite}`nosuchpaper2099`.\n")
    cmd = [str(JUPYTER_BOOK), "build", str(book), "--warningiserror", "--keep-going", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    for expected in ("no_such_page", "no-such-label", "nosuchpaper2099"):
        assert expected in out, f"the build did not report {expected!r}:\n{out[-3000:]}"
    assert "cohen2016group" not in out  # the valid citation is not among the complaints


def test_logo_is_reproducible():
    """The committed logo is what ``book/_static/make_logo.py`` draws."""
    spec = importlib.util.spec_from_file_location("make_logo", ROOT / "book" / "_static" / "make_logo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "book" / "_static" / "logo.svg").read_text() == mod.logo_svg()


# ------------------------------------------------------------------------------ negative controls
_BROKEN = {
    # name: (html injected into a real page, expected problem substrings)
    "raw_dollar": ('<p>The energy is $E = mc^2$ and nothing typesets it.</p>', ["raw TeX"]),
    "tex_error": (r'<p><span class="math notranslate nohighlight">\(\frac{1}\)</span></p>',
                  ["TeX error"]),
    "undefined_macro": (r'<p><span class="math notranslate nohighlight">\(\Rot(x)\)</span></p>',
                        ["undefined TeX macro: \\Rot"]),
    "missing_image": ('<img src="../_images/no-such-figure.png" alt="missing">',
                      ["image did not load", "console error"]),
    "js_error": ('<script>throw new Error("deliberate failure");</script>', ["console error"]),
    "cdn_script": ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
                   ["requested from outside the site", "console error"]),
}


def _inject(html: str, snippet: str) -> str:
    i = html.rindex("</article>") if "</article>" in html else html.rindex("</body>")
    return html[:i] + snippet + html[i:]


def test_checker_catches_broken_pages(site, browser, tmp_path):
    """Each kind of defect, planted in a copy of a real page, is reported; the copy itself is clean."""
    bad = tmp_path / "site"
    shutil.copytree(site, bad, ignore=shutil.ignore_patterns("_static", "_modules", "_sources"))
    (bad / "_static").symlink_to(site / "_static", target_is_directory=True)
    page = bad / "book" / "conventions.html"  # has plenty of math
    original = page.read_text(encoding="utf-8")
    assert "class=\"math" in original
    cases = dict(_BROKEN)
    # A page whose MathJax script is gone: its equations stay un-typeset.
    no_mj = re.sub(r'<script[^>]*src="[^"]*mathjax[^"]*"[^>]*>\s*</script>', "", original)
    assert no_mj != original
    (bad / "book" / "no_mathjax.html").write_text(no_mj, encoding="utf-8")
    for name, (snippet, _) in cases.items():
        (bad / "book" / f"{name}.html").write_text(_inject(original, snippet), encoding="utf-8")
    cases["no_mathjax"] = (None, ["MathJax not loaded", "equation not typeset"])
    # A chapter whose solutions are all unfolded.
    chapter = sorted(_chapter_pages(site))[0].relative_to(site)
    chapter_html = (bad / chapter).read_text(encoding="utf-8")
    assert 'class="cell tag_hide-cell' in chapter_html
    unfolded = chapter_html.replace("<details ", "<details open ")
    (bad / "book" / "unfolded_solutions.html").write_text(unfolded, encoding="utf-8")
    cases["unfolded_solutions"] = (None, ["no folded solution", "displayed unfolded"])
    # A chapter with one more solution, tagged hide-input: the code is folded, the answer is not
    # (the markup myst-nb renders for a hide-input cell), inserted in the Exercises section.
    hide_input = ('<div class="cell tag_hide-input docutils container"><details class="admonition hide above-input">'
                  '<summary>Show code cell source</summary><div class="cell_input docutils container">'
                  '<pre>print(42)</pre></div></details><div class="cell_output docutils container">'
                  '<div class="output stream highlight-myst-ansi notranslate"><pre>42</pre></div></div></div>')
    at = chapter_html.index("</p>", chapter_html.index('id="exercises"')) + len("</p>")
    (bad / "book" / "hide_input_solution.html").write_text(chapter_html[:at] + hide_input + chapter_html[at:],
                                                           encoding="utf-8")
    cases["hide_input_solution"] = (None, ["tagged hide-input", "0 code inputs and 1 outputs visible"])
    # Dead links for the static link checker.
    (bad / "book" / "dead_links.html").write_text(_inject(
        original, '<a href="no-such-page.html">x</a><a href="intro.html#no-such-anchor">y</a>'), encoding="utf-8")

    server = _Server(bad)
    try:
        for original_page, is_chapter in (("book/conventions.html", False), (chapter.as_posix(), True)):
            clean = check_page(browser, server.base + original_page, server.base, chapter=is_chapter)
            assert clean == [], f"the unmodified {original_page} should pass: {clean}"
        for name, (_, expected) in cases.items():
            problems = check_page(browser, server.base + f"book/{name}.html", server.base,
                                  chapter=name in ("unfolded_solutions", "hide_input_solution"))
            text = "\n".join(problems)
            for e in expected:
                assert e in text, f"{name}: expected a problem containing {e!r}, got {problems}"
    finally:
        server.close()
    link_problems = "\n".join(check_links(bad))
    assert "dead_links.html: broken link no-such-page.html" in link_problems
    assert "dead_links.html: missing anchor intro.html#no-such-anchor" in link_problems
    assert "cdn_script.html: <script> loads https://cdn.jsdelivr.net" in link_problems
