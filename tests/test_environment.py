"""The two ways of installing the project name the same packages:
pyproject.toml (used by `make`) and environment.yml (for conda users)."""
import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _normalise(req: str) -> str:
    """'Jupyter_Book < 2' -> 'jupyter-book<2' (PEP 503 name, no spaces)."""
    req = req.replace(" ", "")
    m = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", req)
    name, spec = m.group(1), m.group(2)
    return re.sub(r"[-_.]+", "-", name).lower() + spec


def pyproject_requirements():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in ("book", "test", "bench"):
        reqs += meta["optional-dependencies"][extra]
    return sorted(_normalise(r) for r in reqs)


def environment_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return sorted(_normalise(r) for r in pip if not r.startswith("-"))


def test_environment_yml_matches_pyproject():
    assert environment_requirements() == pyproject_requirements()


def test_environment_yml_pins_python_and_a_fortran_compiler():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda
    assert "fortran-compiler" in conda


def test_normalise_negative_control():
    """The comparison is not vacuous: a changed pin or a renamed package differs."""
    assert _normalise("torch==2.13.0") != _normalise("torch==2.14.0")
    assert _normalise("Jupyter_Book<2") == "jupyter-book<2"
    assert _normalise("sympy") != _normalise("scipy")
