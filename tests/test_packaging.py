"""``pip install minequi`` into someone else's environment leaves their torch and numpy alone,
and the library works there.

A module-scoped fixture builds a fresh virtual environment holding what a user may already
have: numpy 2 and the same CPU torch wheel as the project's ``.venv`` (its exact ``+cpu``
version, so pip can never pull a multi-GB CUDA build), with torch's own dependencies pinned by
``constraints.txt``. The venv is made ``--without-pip`` and driven by the project's pip through
``pip --python`` (saves installing pip into it), and nothing is byte-compiled at install time.
Then, in that venv:

* minequi is installed by pip, non-editable, from a copy of the files a wheel is built from,
  without constraints (as a user would) and without build isolation (setuptools>=77 is already
  there: torch depends on it), so nothing is fetched for the build;
* ``pip list`` before and after: only minequi was added, torch and numpy kept their versions;
  ``pip check`` finds no broken requirement;
* away from the repository, minequi is imported from the venv's site-packages, the doctests of
  every module run (those of ``minequi.symbolic`` are sympy derivations, too slow here; only its
  numpy touch point ``to_numpy`` runs) and the O(3) equivariance of a ``TensorProduct`` is
  measured in float64, with a wrong-parity control that must fail;
* the same checks again after moving numpy down to 1.23.5, the oldest numpy pyproject.toml
  claims (torch's lower bound, 2.13, is the installed wheel itself).

Negative control: pip's dry-run report for a copy of the package carrying the old pins
(``torch==2.13.0``, ``numpy<2``) shows that it would have replaced numpy 2, which the
before/after comparison catches.

Needs a CPU build of torch in the project's venv and that wheel reachable by pip (on the
project's machines it lies on disk; elsewhere set ``PIP_EXTRA_INDEX_URL`` to PyTorch's CPU
index). Otherwise the tests skip, except under CI (``CI`` set), where they fail.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMPY_2 = "2.2.6"       # a user's numpy 2 (any 2.x would do; this one is on the project's disk)
NUMPY_OLDEST = "1.23.5"  # the oldest numpy claimed by pyproject.toml (numpy>=1.23)

# Run inside the fresh venv (cwd outside the repository). Prints one JSON line.
CHECK_SCRIPT = r'''
import doctest, importlib, json, pkgutil, sysconfig
from pathlib import Path

import numpy, torch
import minequi
from minequi import Irreps, TensorProduct
from minequi.testing import equivariance_error, haar_o3

flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
attempted = failed = 0
for info in pkgutil.walk_packages(minequi.__path__, "minequi."):
    if info.name.startswith("minequi.symbolic"):
        continue
    if info.name in ("minequi.ase_calculator", "minequi.physics_data"):  # need ASE, a book dependency
        continue
    result = doctest.testmod(importlib.import_module(info.name), optionflags=flags)
    attempted, failed = attempted + result.attempted, failed + result.failed
from minequi.symbolic import so3 as symbolic_so3  # numpy meets the library here
runner = doctest.DocTestRunner(optionflags=flags)
for test in doctest.DocTestFinder().find(symbolic_so3.to_numpy, globs=vars(symbolic_so3)):
    runner.run(test)
attempted, failed = attempted + runner.tries, failed + runner.failures

ir1, ir2, ir_out = Irreps("2x0e+2x1o"), Irreps("0e+1o"), Irreps("2x0e+1o+1e")
torch.manual_seed(0)
tp = TensorProduct(ir1, ir2, ir_out)
x = (ir1.randn(16, -1, dtype=torch.float64), ir2.randn(16, -1, dtype=torch.float64))
act_in = lambda Q, x: (x[0] @ ir1.D_from_matrix(Q).T, x[1] @ ir2.D_from_matrix(Q).T)
err = equivariance_error(tp, x, haar_o3, act_in, lambda Q, y: y @ ir_out.D_from_matrix(Q).T)
wrong = Irreps("2x0e+1e+1o")  # parity of the vectors swapped: must be detected
err_wrong = equivariance_error(tp, x, haar_o3, act_in, lambda Q, y: y @ wrong.D_from_matrix(Q).T)

site = Path(sysconfig.get_paths()["purelib"]).resolve()
print(json.dumps({
    "minequi_in_site_packages": Path(minequi.__file__).resolve().is_relative_to(site),
    "minequi_file": minequi.__file__, "numpy": numpy.__version__, "torch": torch.__version__,
    "doctests_attempted": attempted, "doctests_failed": failed,
    "tp_error": err, "tp_wrong_parity_error": err_wrong,
}))
'''


def _fail_or_skip(msg):
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _env():
    """The caller's environment (pip's index settings included) without another Python's paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_CONSTRAINT", "PIP_USER",
                        "PIP_REQUIRE_VIRTUALENV", "PIP_TARGET", "PIP_PREFIX",
                        # torch is installed --no-compile: let the first import write the .pyc
                        # files of what it loads (2.5x faster imports in the second check)
                        "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


class FreshVenv:
    def __init__(self, path: Path):
        self.path = path
        self.python = path / "bin" / "python"
        venv.EnvBuilder(with_pip=False).create(path)

    def pip(self, *args, check=True):
        cmd = [sys.executable, "-m", "pip", "--python", str(self.python),
               "--disable-pip-version-check", "--no-input", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def versions(self) -> dict[str, str]:
        rows = json.loads(self.pip("list", "--format=json").stdout)
        return {re.sub(r"[-_.]+", "-", r["name"]).lower(): r["version"] for r in rows}

    def check(self, cwd: Path) -> dict:
        proc = subprocess.run([str(self.python), "-c", CHECK_SCRIPT], capture_output=True, text=True,
                              cwd=cwd, env=_env(), timeout=900)
        assert proc.returncode == 0, f"check script failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
        return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stdout": proc.stdout}


def _copy_sources(dest: Path, pyproject_text: str | None = None) -> Path:
    """The files a wheel of minequi is built from, copied (the build writes into its source tree)."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "minequi", dest / "minequi",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    if pyproject_text is not None:
        (dest / "pyproject.toml").write_text(pyproject_text)
    return dest


def _torch_requirement() -> str:
    import torch

    if torch.version.cuda is not None or torch.version.hip is not None:
        _fail_or_skip(f"the project's torch {torch.__version__} is a GPU build; installing it again "
                      f"into a fresh venv would download several GB (use the CPU wheel)")
    if platform.system() == "Linux" and "+cpu" not in torch.__version__:
        _fail_or_skip(f"the project's torch {torch.__version__} has no '+cpu' label: on Linux "
                      f"'torch=={torch.__version__}' could resolve to a CUDA build")
    return f"torch=={torch.__version__}"


def _dry_run_with_old_pins(env: FreshVenv, tmp: Path) -> dict[str, str]:
    """What pip would install for a copy of minequi that carries the old pins (torch==2.13.0, numpy<2)."""
    text = (ROOT / "pyproject.toml").read_text()
    old = re.sub(r"dependencies = \[[^\]]*\]", 'dependencies = ["torch==2.13.0", "numpy<2"]', text, count=1)
    assert old != text
    report = tmp / "report.json"
    env.pip("install", "--dry-run", "--no-build-isolation", "--report", str(report),
            str(_copy_sources(tmp / "src-old-pins", old)))
    return {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the venv, install minequi, run the checks with numpy 2 and the oldest numpy
    (about 40-60 s of CPU time; see the README's table for wall-clock times)."""
    tmp = tmp_path_factory.mktemp("packaging")
    try:
        torch_req = _torch_requirement()
        env = FreshVenv(tmp / "venv")
        # torch's dependencies as in the book's environment; numpy's pin removed (the user has 2.x)
        constraints = tmp / "constraints.txt"
        constraints.write_text("".join(line for line in (ROOT / "constraints.txt").read_text().splitlines(True)
                                       if not line.lower().startswith("numpy==")))
        proc = env.pip("install", "--no-compile", "-c", str(constraints), torch_req, f"numpy=={NUMPY_2}",
                       check=False)
        if proc.returncode != 0:
            if "No matching distribution" in proc.stderr + proc.stdout:
                _fail_or_skip(f"pip cannot find {torch_req} or numpy=={NUMPY_2}:\n{proc.stderr[-2000:]}")
            raise RuntimeError(f"installing {torch_req} numpy=={NUMPY_2} failed:\n{proc.stderr[-3000:]}")

        out = {"venv": env, "tmp": tmp, "before": env.versions()}
        out["install"] = env.pip("install", "--no-compile", "--no-build-isolation",
                                 str(_copy_sources(tmp / "src")))
        out["after"] = env.versions()
        out["pip_check"] = env.pip("check", check=False)
        out["numpy2"] = env.check(cwd=tmp)
        out["old_pins_would_install"] = _dry_run_with_old_pins(env, tmp)  # the negative control
        env.pip("install", "--no-compile", f"numpy=={NUMPY_OLDEST}")
        out["pip_check_oldest"] = env.pip("check", check=False)
        out["numpy_oldest"] = env.check(cwd=tmp)
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # about 800 MB


def test_fresh_venv_holds_numpy2_and_the_projects_cpu_torch(installed):
    import torch

    assert installed["before"]["numpy"] == NUMPY_2
    assert installed["before"]["torch"] == torch.__version__
    assert "minequi" not in installed["before"]


def test_pip_install_changes_neither_torch_nor_numpy(installed):
    before, after = installed["before"], installed["after"]
    assert after["torch"] == before["torch"], f"pip changed torch: {before['torch']} -> {after['torch']}"
    assert after["numpy"] == before["numpy"], f"pip changed numpy: {before['numpy']} -> {after['numpy']}"
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
               if before.get(k) != after.get(k)}
    assert changed == {"minequi": (None, "0.1.0")}, f"pip changed more than minequi: {changed}"
    assert installed["pip_check"].returncode == 0, installed["pip_check"].stdout


@pytest.mark.parametrize("case, numpy_version", [("numpy2", NUMPY_2), ("numpy_oldest", NUMPY_OLDEST)])
def test_library_checks_pass_in_the_users_environment(installed, case, numpy_version):
    r = installed[case]
    assert r["numpy"] == numpy_version
    assert r["minequi_in_site_packages"], f"imported minequi from {r['minequi_file']}, not the venv"
    assert r["doctests_failed"] == 0, r["stdout"][-5000:]
    assert r["doctests_attempted"] >= 100, r  # every module's examples ran (148 when written)
    assert r["tp_error"] < 1e-12, r            # measured 1e-15 .. 1e-14
    assert r["tp_wrong_parity_error"] > 1e-2, r  # the check can fail
    assert installed["pip_check_oldest" if case == "numpy_oldest" else "pip_check"].returncode == 0


def test_negative_control_old_pins_would_have_replaced_numpy(installed):
    """The packaging this test replaced (torch==2.13.0, numpy<2) fails the same comparison:
    in the same venv (numpy 2), pip's dry run would have replaced numpy."""
    would_install = installed["old_pins_would_install"]
    assert "minequi" in would_install
    assert would_install.get("numpy", "").startswith("1."), would_install
    assert "torch" not in would_install  # 2.13.0+cpu satisfies ==2.13.0: only numpy moves
