"""The three files that say what to install agree with each other.

* ``pyproject.toml``: the library's own dependencies (``torch`` and ``numpy``, lower bounds
  only, so that ``pip install minequi`` leaves a user's versions alone) and the ``book``,
  ``test`` and ``bench`` extras.
* ``constraints.txt``: the exact versions ``make setup`` installs.
* ``environment.yml``: the same environment for conda; it names the same packages as
  pyproject.toml, with the same specifiers, except where it pins an exact version, which must
  then satisfy pyproject.toml and equal constraints.txt's pin.
"""
import pathlib
import re
import tomllib

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
