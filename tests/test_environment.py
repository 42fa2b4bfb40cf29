"""The three files that say what to install agree with each other.

* ``pyproject.toml``: the library's own dependencies (``torch`` and ``numpy``, lower bounds
  only, so that ``pip install minequi`` leaves a user's versions alone) and the ``book``,
  ``test`` and ``bench`` extras.
* ``constraints.txt``: the exact versions ``make setup`` installs.
* ``environment.yml``: the same environment for conda; it names the same packages as
  pyproject.toml, with the same specifiers, except where it pins an exact version, which must
  then satisfy pyproject.toml and equal constraints.txt's pin.
"""
import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import time
import tomllib
import urllib.request

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name(name: str) -> str:
    """PEP 503 normalised name: 'Jupyter_Book' -> 'jupyter-book'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_specs(groups=("dependencies", "book", "test", "bench")) -> dict[str, SpecifierSet]:
    """{name: the intersection of every specifier pyproject.toml gives it} over ``groups``."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out: dict[str, SpecifierSet] = {}
    for group in groups:
        reqs = meta["dependencies"] if group == "dependencies" else meta["optional-dependencies"][group]
        for r in map(Requirement, reqs):
            out[_name(r.name)] = out.get(_name(r.name), SpecifierSet()) & r.specifier
    return out


def environment_requirements() -> list[Requirement]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return [Requirement(r) for r in pip if not r.startswith("-")]


def constraint_pins(text: str | None = None) -> dict[str, Version]:
    text = (ROOT / "constraints.txt").read_text() if text is None else text
    out = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin 'name==version'"
            out[_name(name)] = Version(version)
    return out


def pin_of(req: Requirement):
    """The version of an exact pin 'name==v', else None."""
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
        return Version(specs[0].version)
    return None


def mismatches(env_reqs, specs, pins) -> list[str]:
    """Every way environment.yml (env_reqs) disagrees with pyproject (specs) or constraints (pins)."""
    problems = []
    names = [_name(r.name) for r in env_reqs]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{dup}: named more than once in environment.yml")
    for missing in sorted(set(specs) - set(names)):
        problems.append(f"{missing}: in pyproject.toml, missing from environment.yml")
    for extra in sorted(set(names) - set(specs)):
        problems.append(f"{extra}: in environment.yml, not in pyproject.toml")
    for r in env_reqs:
        name = _name(r.name)
        if name not in specs:
            continue
        pin = pin_of(r)
        if pin is None:
            if r.specifier != specs[name]:
                problems.append(f"{name}: environment.yml says {r.specifier or 'any'!s}, "
                                f"pyproject.toml says {specs[name] or 'any'!s}")
        else:
            if not specs[name].contains(pin, prereleases=True):
                problems.append(f"{name}: environment.yml pins {pin}, outside pyproject.toml's {specs[name]}")
            if name in pins and pins[name].public != pin.public:
                problems.append(f"{name}: environment.yml pins {pin}, constraints.txt pins {pins[name]}")
    return problems


def test_environment_yml_agrees_with_pyproject_and_constraints():
    assert mismatches(environment_requirements(), pyproject_specs(), constraint_pins()) == []


def test_constraints_pin_every_package_within_pyproject_bounds():
    pins = constraint_pins()
    for name, spec in pyproject_specs().items():
        assert name in pins, f"constraints.txt does not pin {name}"
        assert spec.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {spec}"


def test_library_needs_only_torch_and_numpy_as_lower_bounds():
    """`pip install minequi` must not move a user's torch or numpy: no ==, <, ~= or != here."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    assert sorted(_name(r.name) for r in reqs) == ["numpy", "torch"]
    for r in reqs:
        assert r.marker is None and r.extras == set()
        assert [s.operator for s in r.specifier] == [">="], f"{r}: only a lower bound '>=' is allowed"
    # the book's own pins satisfy the library's bounds (torch 2.13.0 and numpy 1.26.4 today)
    lib = pyproject_specs(("dependencies",))
    for name, pin in constraint_pins().items():
        if name in lib:
            assert lib[name].contains(pin)


def test_environment_yml_pins_python_and_a_fortran_compiler():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda
    assert "fortran-compiler" in conda


def test_mismatches_negative_control():
    """The comparison is not vacuous: each kind of disagreement is reported."""
    specs = {"torch": SpecifierSet(">=2.13"), "numpy": SpecifierSet(">=1.23,<2"),
             "jupyter-book": SpecifierSet("<2")}
    pins = {"torch": Version("2.13.0"), "numpy": Version("1.26.4"), "jupyter-book": Version("1.0.4")}
    good = [Requirement(r) for r in ["torch==2.13.0", "numpy==1.26.4", "Jupyter_Book<2"]]
    assert mismatches(good, specs, pins) == []
    cases = {
        "torch==2.12.0": "torch: environment.yml pins 2.12.0, outside",      # below the bound
        "numpy==2.0.0": "numpy: environment.yml pins 2.0.0, outside",       # above escnn's <2
        "numpy==1.24.0": "numpy: environment.yml pins 1.24.0, constraints.txt pins 1.26.4",
        "jupyter-book<3": "jupyter-book: environment.yml says <3",
        "sympy": "sympy: in environment.yml, not in pyproject.toml",
    }
    for req, message in cases.items():
        name = _name(Requirement(req).name)
        env = [r for r in good if _name(r.name) != name] + [Requirement(req)]
        problems = mismatches(env, specs, pins)
        assert any(p.startswith(message) for p in problems), (req, problems)
    problems = mismatches(good[1:], specs, pins)
    assert problems == ["torch: in pyproject.toml, missing from environment.yml"]
    assert mismatches(good + good[:1], specs, pins) == ["torch: named more than once in environment.yml"]
    assert _name("Jupyter_Book") == "jupyter-book"
    assert constraint_pins("# c\nTorch==2.13.0  # cpu\n") == {"torch": Version("2.13.0")}


# ----------------------------------------------------------------------------- notebook front end
def makefile_recipe(target: str, text: str | None = None) -> list[str]:
    """The recipe lines of ``target`` in the Makefile, with $(VENV)/$(PY) expanded."""
    text = (ROOT / "Makefile").read_text() if text is None else text
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if re.match(rf"^{re.escape(target)}\s*:", line):
            inside = True
        elif inside and line.startswith("\t"):
            out.append(line[1:].replace("$(PY)", ".venv/bin/python").replace("$(VENV)", ".venv"))
        elif inside and line.strip() and not line.startswith("#"):
            break
    return out


def registered_kernel(text: str | None = None) -> str:
    """The kernel name `make setup` registers: ``ipykernel install ... --name X``."""
    names = [m.group(1) for line in makefile_recipe("$(STAMP)", text)
             for m in [re.search(r"ipykernel install\b.*--name[ =](\S+)", line)] if m]
    assert len(names) == 1, f"expected one 'ipykernel install --name X' in the set-up, found {names}"
    return names[0]


def notebook_kernels() -> dict[str, str]:
    return {nb.name: json.loads(nb.read_text())["metadata"]["kernelspec"]["name"]
            for nb in sorted((ROOT / "book").glob("*.ipynb"))}


def test_notebooks_name_the_kernel_the_setup_registers():
    kernel = registered_kernel()
    kernels = notebook_kernels()
    assert len(kernels) >= 6
    wrong = {nb: k for nb, k in kernels.items() if k != kernel}
    assert wrong == {}, f"`make setup` registers kernel {kernel!r}; these notebooks name another: {wrong}"
    # `make lab` opens book/ in JupyterLab with that kernel as the default
    (lab,) = makefile_recipe("lab")
    assert lab.startswith(".venv/bin/jupyter lab ")
    assert "--ServerApp.root_dir=book" in lab.split()
    assert f"--MappingKernelManager.default_kernel_name={kernel}" in lab.split()


def test_registered_kernelspec_runs_the_projects_python():
    """Where `make setup` has run, .venv holds the kernelspec, and it starts .venv's Python."""
    venv = ROOT / ".venv"
    if not (venv / ".minequi-installed").exists():
        pytest.skip("no .venv set up by `make setup` here")
    spec = venv / "share" / "jupyter" / "kernels" / registered_kernel() / "kernel.json"
    assert spec.exists(), f"{spec} missing: `make setup` should have registered it"
    argv = json.loads(spec.read_text())["argv"]
    assert pathlib.Path(argv[0]).resolve() == (venv / "bin" / "python").resolve()
    assert "ipykernel_launcher" in argv
    assert (venv / "bin" / "jupyter-lab").exists(), "JupyterLab (book extra) is not installed in .venv"


def test_kernel_checks_negative_control():
    """A renamed kernel or a Makefile without the registration is caught."""
    text = (ROOT / "Makefile").read_text()
    assert registered_kernel(text.replace("--name python3", "--name minequi")) == "minequi"
    with pytest.raises(AssertionError, match="expected one 'ipykernel install --name X'"):
        registered_kernel(text.replace("ipykernel install", "ipykernel uninstall"))
    assert makefile_recipe("lab", text.replace("root_dir=book", "root_dir=.")) != makefile_recipe("lab", text)


def test_make_lab_serves_book_with_the_projects_kernel(tmp_path):
    """Run the `make lab` command (without a browser, on a free local port) and ask the server
    which kernel it starts by default and which notebooks it offers."""
    if not (ROOT / ".venv" / "bin" / "jupyter-lab").exists():
        pytest.skip("JupyterLab is not installed in .venv (run `make setup`)")
    # the command `make lab` runs, as make expands it (-n: print, do not run)
    dry = subprocess.run(["make", "-s", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True)
    lab = dry.stdout.strip().splitlines()[-1]
    assert lab.startswith(".venv/bin/jupyter lab "), dry.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "minequi-test"
    cmd = shlex.split(lab) + ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                              f"--IdentityProvider.token={token}", "--LabApp.news_url=",
                              "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        def get(path):
            url = f"http://127.0.0.1:{port}{path}?token={token}"
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)

        deadline = time.monotonic() + 120
        while True:
            try:
                specs = get("/api/kernelspecs")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
                time.sleep(0.5)
        kernel = registered_kernel()
        assert specs["default"] == kernel
        argv = specs["kernelspecs"][kernel]["spec"]["argv"]
        assert pathlib.Path(argv[0]).resolve() == (ROOT / ".venv" / "bin" / "python").resolve()
        listed = {item["name"] for item in get("/api/contents")["content"]}
        assert set(notebook_kernels()) <= listed  # the server's root is book/
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# ----------------------------------------------------------------------------- repository address
BUTTONS = ("use_repository_button", "use_issues_button", "use_edit_page_button")
LAUNCHERS = ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url")
DEAD_ADDRESS = "github.com/" + "minequi/minequi"  # the address that never existed (split: no self-match)


def button_problems(cfg: dict) -> list[str]:
    """Buttons of the built book that would point to a repository that is not configured."""
    url = (cfg.get("repository") or {}).get("url") or ""
    if url:
        return []
    on = [b for b in BUTTONS if (cfg.get("html") or {}).get(b)]
    on += [f"launch_buttons.{k}" for k in LAUNCHERS if (cfg.get("launch_buttons") or {}).get(k)]
    if (cfg.get("launch_buttons") or {}).get("thebe"):
        on.append("launch_buttons.thebe")
    return [f"{b} is on but repository.url is empty" for b in on]


def repository_files() -> list[pathlib.Path]:
    """Tracked and untracked-but-not-ignored files (git's view), else a walk of the tree."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return sorted({ROOT / p for p in out.split("\0") if p and (ROOT / p).is_file()})
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "_build", "__pycache__", ".pytest_cache", ".hypothesis"}
        return sorted(p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts))


def files_repeating(needles, files, root: pathlib.Path = ROOT) -> list[str]:
    """'path: needle' for every file under ``root`` (but root/_config.yml) that contains a needle."""
    hits = []
    for path in files:
        if path == root / "_config.yml":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{path.relative_to(root)}: {n}" for n in needles if n in text]
    return hits


def test_no_button_points_to_a_repository_that_is_not_set():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert button_problems(cfg) == []
    assert DEAD_ADDRESS not in ((cfg.get("repository") or {}).get("url") or "")


def test_repository_address_is_written_only_in_config():
    """The address lives in _config.yml alone: no page, notebook, README or test repeats it."""
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = ((cfg.get("repository") or {}).get("url") or "").split("://")[-1].rstrip("/")
    needles = [DEAD_ADDRESS] + ([url] if url else [])
    assert files_repeating(needles, repository_files()) == []


def test_repository_checks_negative_control(tmp_path):
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["html"]["use_edit_page_button"] = True
    cfg["launch_buttons"]["binderhub_url"] = "https://mybinder.org"
    assert button_problems(cfg) == ["use_edit_page_button is on but repository.url is empty",
                                    "launch_buttons.binderhub_url is on but repository.url is empty"]
    cfg["repository"]["url"] = "https://example.org/minequi"
    assert button_problems(cfg) == []
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "page.md").write_text(f"see [the tests](https://{DEAD_ADDRESS}/blob/main/tests)")
    (tmp_path / "_config.yml").write_text(f"repository:\n  url: https://{DEAD_ADDRESS}\n")
    (tmp_path / "README.md").write_text("no address here")
    files = sorted(tmp_path.rglob("*"))
    assert files_repeating([DEAD_ADDRESS], files, tmp_path) == [f"book/page.md: {DEAD_ADDRESS}"]
    assert len(repository_files()) > 20 and ROOT / "README.md" in repository_files()
