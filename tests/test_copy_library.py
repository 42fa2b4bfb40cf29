"""``minequi/`` works on its own after being copied into someone else's project.

The test copies the folder ``minequi/`` (and nothing else) into an empty temporary folder
and runs a fresh interpreter there in isolated mode without ``site`` (``python -I -S``), so
neither the virtual environment's site-packages, nor ``PYTHONPATH``, nor the current folder
is on its import path. The only other entry on that path is a folder of symbolic links to
torch and numpy -- plus the two small packages that ``import torch`` itself loads,
``typing_extensions`` and ``torchgen`` -- and the standard library. In that interpreter:

* ``sympy``, ``escnn``, ``e3nn``, ``scipy`` and ``matplotlib`` cannot be imported;
* ``import minequi`` finds the copy, and every module of the copy except
  ``minequi.symbolic`` (which needs sympy by design) imports;
* the example of ``book/using_minequi.md`` runs: a p4m group CNN's forward pass and its
  equivariance, measured with ``minequi.testing`` in float64 (error < 1e-12);
* as a negative control, the same network with a non-equivariant layer in the middle fails
  that check.

This is stricter than any real installation: torch lists sympy as a dependency and imports it
lazily in a few places (``torch._check`` and friends, ``torch.compile``), so minequi must stay
off those code paths (``minequi.testing`` unravels indices by hand for that reason), and this
test is what notices when it does not.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the isolated interpreter may import besides the standard library and the copy.
ALLOWED = ("torch", "numpy", "typing_extensions", "torchgen")
BLOCKED = ("sympy", "escnn", "e3nn", "scipy", "matplotlib", "ase")
# Modules that import ASE by design (the physics chapters' data and calculator adapter); they
# are never imported by ``minequi/__init__``, and in the copy they must fail, naming ase.
NEEDS_ASE = ("minequi.ase_calculator", "minequi.physics_data")


def _example_code() -> str:
    """The python block that book/using_minequi.md says the copy test runs."""
    text = (ROOT / "book" / "using_minequi.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- tests/test_copy_library.py[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "book/using_minequi.md lost its marked example block"
    return m.group(1)


def _link_allowed_packages(dest: Path) -> None:
    """Fill ``dest`` with symlinks to the allowed top-level packages (and their ``*.libs``)."""
    dest.mkdir()
    for name in ALLOWED:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not installed"
        origin = Path(spec.origin)
        src = origin.parent if origin.name == "__init__.py" else origin
        (dest / src.name).symlink_to(src, target_is_directory=src.is_dir())
        libs = src.parent / f"{name}.libs"  # shared libraries of manylinux wheels
        if libs.is_dir():
            (dest / libs.name).symlink_to(libs, target_is_directory=True)


_CHILD = r'''
import importlib, json, pkgutil, sys, sysconfig
copy_dir, deps_dir = sys.argv[1], sys.argv[2]
stdlib = (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib"))
sys.path[:] = [copy_dir, deps_dir] + [p for p in sys.path if "site-packages" not in p and "dist-packages" not in p]
result = {"path": sys.path}
result["blocked_importable"] = []
for name in BLOCKED:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        result["blocked_importable"].append(name)

import minequi
result["minequi_file"] = minequi.__file__
result["modules"] = []
for info in pkgutil.walk_packages(minequi.__path__, "minequi."):
    if info.name == "minequi.symbolic" or info.name.startswith("minequi.symbolic."):
        continue
    if info.name in NEEDS_ASE:
        try:
            importlib.import_module(info.name)
            result.setdefault("ase_errors", {})[info.name] = None
        except ImportError as e:
            result.setdefault("ase_errors", {})[info.name] = repr(e)
        continue
    importlib.import_module(info.name)
    result["modules"].append(info.name)
# Where every loaded module's file really lives (symlinks of deps_dir resolved).
import os
allowed = [os.path.realpath(copy_dir)] + [os.path.realpath(os.path.join(deps_dir, n)) for n in os.listdir(deps_dir)]
allowed += [os.path.realpath(p) for p in stdlib]
result["loaded_outside"] = sorted({
    f"{m} ({mod.__file__})" for m, mod in list(sys.modules.items())
    if getattr(mod, "__file__", None) and not os.path.realpath(mod.__file__).startswith(tuple(allowed))
})
try:  # the one part that needs sympy: it must fail, and say why
    importlib.import_module("minequi.symbolic.so3")
    result["symbolic_error"] = None
except ImportError as e:
    result["symbolic_error"] = repr(e)
print("RESULT " + json.dumps(result))
'''


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """(python command prefix, copy folder, deps folder) for running code against the copy."""
    work = tmp_path_factory.mktemp("copy")
    project = work / "project"
    project.mkdir()
    shutil.copytree(ROOT / "minequi", project / "minequi",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    deps = work / "deps"
    _link_allowed_packages(deps)
    return [sys.executable, "-I", "-S"], project, deps


def _run(isolated, code: str, timeout=300) -> subprocess.CompletedProcess:
    cmd, project, deps = isolated
    prelude = ("import sys\n"
               f"sys.path[:] = [{str(project)!r}, {str(deps)!r}] + "
               "[p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p]\n")
    return subprocess.run(cmd + ["-c", prelude + code], cwd=project, capture_output=True,
                          text=True, timeout=timeout)


def test_copied_library_needs_only_torch_and_numpy(isolated):
    cmd, project, deps = isolated
    child = f"BLOCKED = {BLOCKED!r}\nNEEDS_ASE = {NEEDS_ASE!r}\n" + _CHILD
    r = subprocess.run(cmd + ["-c", child, str(project), str(deps)], cwd=project,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the copied minequi failed to import:\n{r.stderr[-4000:]}"
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["blocked_importable"] == [], (
        f"the isolated interpreter could import {result['blocked_importable']}; path={result['path']}")
    assert result["minequi_file"] == str(project / "minequi" / "__init__.py")
    expected = {f"minequi.{p.stem}" for p in (ROOT / "minequi").glob("*.py")
                if p.stem != "__init__" and f"minequi.{p.stem}" not in NEEDS_ASE}
    assert expected <= set(result["modules"]), f"modules not imported: {expected - set(result['modules'])}"
    # Nothing was loaded from anywhere but the copy, the allowed packages and the stdlib.
    assert result["loaded_outside"] == [], result["loaded_outside"]
    # minequi.symbolic is the one part that needs sympy: in the copy it fails, naming sympy.
    assert result["symbolic_error"] and "sympy" in result["symbolic_error"], result["symbolic_error"]
    # the ASE adapters fail there too, naming ase (and nothing else imports ase)
    ase_errors = result.get("ase_errors", {})
    assert set(ase_errors) == set(NEEDS_ASE), ase_errors
    assert all(e and "ase" in e for e in ase_errors.values()), ase_errors


def test_example_runs_in_the_copy(isolated):
    r = _run(isolated, _example_code())
    assert r.returncode == 0, f"the example of book/using_minequi.md failed in the copy:\n{r.stderr[-4000:]}"
    assert r.stdout.splitlines() == ["torch.Size([2, 4, 15, 15])", "max equivariance error < 1e-12"], r.stdout


def test_example_check_fails_for_a_non_equivariant_network(isolated):
    """Negative control: a plain Conv2d between the pooled features breaks p4m equivariance,
    and the very same check reports it."""
    code = _example_code()
    broken = code.replace('    minequi.GroupPool("max"),',
                          '    minequi.GroupPool("max"),\n    torch.nn.Conv2d(4, 4, 3, padding=1),')
    assert broken != code
    r = _run(isolated, broken)
    assert r.returncode != 0
    assert "AssertionError" in r.stderr, r.stderr[-2000:]
    err = float(r.stderr.strip().splitlines()[-1].split(":", 1)[1])
    assert err > 1e-3, err


def test_hidden_packages_exist_in_this_environment():
    """The isolation means something only if what it hides is installed here: the book needs
    sympy and escnn, so the copy test would notice a stray import of either."""
    for name in ("sympy", "escnn"):
        assert importlib.util.find_spec(name) is not None, f"{name} should be installed for the book"
