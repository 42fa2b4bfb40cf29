"""Labelled atomic structures from real physics, generated on the reader's machine.

The physics chapters train interatomic potentials on data made in seconds, offline, by two
reference methods that ship with Python packages:

* ASE's **EMT** calculator (effective-medium theory, Jacobsen, Stoltze and Norskov 1996), an
  analytic many-body potential for fcc metals (Al, Cu, Ag, Au, Ni, Pd, Pt), giving energies,
  forces and, for periodic cells, the stress tensor;
* **GFN2-xTB** (Bannwarth, Ehlert and Grimme 2019), a semi-empirical tight-binding method, run
  through the ``tblite`` package's ASE calculator, for a short molecular-dynamics trajectory of
  a small molecule (an MD17-style data set, Chmiela et al. 2017).

Every generator is seeded (``seed=``) and returns a list of ``ase.Atoms``; each carries its
labels in an ``ase.calculators.singlepoint.SinglePointCalculator`` (``energy`` in eV, ``forces``
[N, 3] in eV/A, and for periodic cells ``stress`` in eV/A^3 with ASE's sign: positive is
tensile, sigma = (1/V) dE/d(epsilon)). :func:`collate` turns such a list into the batched
tensors every model in the book takes (PyTorch Geometric's flat ``batch [N]`` layout), and
:func:`write_extxyz` / :func:`read_extxyz` store and load them in ASE's extended XYZ format.

This module imports ``ase`` at import time, so ``minequi/__init__`` never imports it: the
library itself needs torch and numpy only.

>>> data = emt_clusters(3, natoms=(4, 6), seed=0)
>>> [len(a) for a in data]
[6, 5, 4]
>>> b = collate(data)
>>> b["pos"].shape, b["batch"].tolist()[:8], b["energy"].shape, bool(b["stress"].isnan().all())
(torch.Size([15, 3]), [0, 0, 0, 0, 0, 0, 1, 1], torch.Size([3]), True)
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

__all__ = [
    "random_cluster_positions",
    "emt_clusters",
    "emt_bulk",
    "xtb_molecule_md",
    "write_extxyz",
    "read_extxyz",
    "collate",
]

EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")  # EMT's fitted metals (no H/C/N/O)


def _label(atoms: Atoms, calc, stress: bool) -> Atoms:
    """A copy of ``atoms`` carrying ``calc``'s energy, forces (and stress) as fixed labels."""
    atoms = atoms.copy()
    atoms.calc = calc
    results = {
        "energy": float(atoms.get_potential_energy()),
        "forces": atoms.get_forces().copy(),          # [N, 3] eV/A
    }
    if stress:
        results["stress"] = atoms.get_stress().copy()  # [6] Voigt xx yy zz yz xz xy, eV/A^3
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def random_cluster_positions(
    natoms: int,
    radius: float,
    min_dist: float,
    rng: np.random.Generator,
    max_tries: int = 1000,
    chunk: int = 64,
) -> np.ndarray:
    """Uniform random points in a ball, no two closer than ``min_dist``; [natoms, 3].

    Atoms are placed one after the other. For each, ``chunk`` candidate points are drawn at
    once and their distances to every atom already placed are checked in one vectorised
    step ([chunk, placed]); the first candidate far enough from all of them is kept. If
    ``max_tries`` candidates for one atom all fail, a ``RuntimeError`` says so (the ball is
    too crowded: lower ``min_dist`` or enlarge ``radius``) instead of looping forever.

    >>> rng = np.random.default_rng(0)
    >>> x = random_cluster_positions(10, radius=4.0, min_dist=2.0, rng=rng)
    >>> d = np.linalg.norm(x[:, None] - x[None], axis=-1) + 1e9 * np.eye(10)
    >>> x.shape, bool(d.min() >= 2.0), bool(np.linalg.norm(x, axis=1).max() <= 4.0)
    ((10, 3), True, True)
    >>> random_cluster_positions(50, radius=2.0, min_dist=2.0, rng=rng, max_tries=200)
    Traceback (most recent call last):
    ...
    RuntimeError: random_cluster_positions: could not place atom ... of 50 at least min_dist=2.0 A from the others in a ball of radius 2.0 A after max_tries=200 draws; lower min_dist or raise radius
    """
    if natoms < 1:
        raise ValueError(f"random_cluster_positions: natoms must be >= 1, got {natoms}")
    if radius <= 0 or min_dist < 0:
        raise ValueError(f"random_cluster_positions: need radius > 0 and min_dist >= 0, got {radius}, {min_dist}")
    pos = np.zeros((natoms, 3))                                    # [natoms, 3]
    for k in range(natoms):
        tries = 0
        while True:
            if tries >= max_tries:
                raise RuntimeError(
                    f"random_cluster_positions: could not place atom {k} of {natoms} at least "
                    f"min_dist={min_dist} A from the others in a ball of radius {radius} A after "
                    f"max_tries={max_tries} draws; lower min_dist or raise radius"
                )
            m = min(chunk, max_tries - tries)
            tries += m
            # uniform in the ball: direction from a Gaussian, radius from u^(1/3)
            v = rng.normal(size=(m, 3))                            # [m, 3]
            v *= (radius * rng.random(m) ** (1.0 / 3.0) / np.linalg.norm(v, axis=1))[:, None]
            d = np.linalg.norm(v[:, None, :] - pos[None, :k, :], axis=-1)  # [m, k]
            ok = np.flatnonzero((d >= min_dist).all(axis=1))      # candidates far from all placed
            if ok.size:
                pos[k] = v[ok[0]]
                break
    return pos


def emt_clusters(
    n: int,
    symbols: tuple[str, ...] = ("Cu",),
    natoms: tuple[int, int] = (4, 13),
    min_dist: float = 2.2,
    volume_per_atom: float = 20.0,
    seed: int = 0,
    max_tries: int = 1000,
) -> list[Atoms]:
    """``n`` random metal clusters labelled by EMT (energy, forces; no cell, no stress).

    Cluster ``k`` has a number of atoms drawn uniformly from ``natoms = (lo, hi)`` inclusive,
    each element drawn uniformly from ``symbols`` (EMT metals: Al, Cu, Ag, Au, Ni, Pd, Pt),
    positions uniform in a ball of volume ``natoms * volume_per_atom`` (A^3; fcc Cu has 11.8)
    with every pair at least ``min_dist`` apart (see :func:`random_cluster_positions`, which
    raises ``RuntimeError`` after ``max_tries`` failed draws for one atom). Deterministic in
    ``seed``.

    >>> a = emt_clusters(1, symbols=("Cu", "Au"), natoms=(8, 8), seed=3)[0]
    >>> len(a), sorted(set(a.get_chemical_symbols())) <= ["Au", "Cu"], a.get_forces().shape
    (8, True, (8, 3))
    >>> abs(a.get_forces().sum(0)).max() < 1e-10   # no external force: momentum is conserved
    True
    """
    lo, hi = natoms
    if not 1 <= lo <= hi:
        raise ValueError(f"emt_clusters: natoms must be (lo, hi) with 1 <= lo <= hi, got {natoms}")
    bad = [s for s in symbols if s not in EMT_ELEMENTS]
    if bad or not symbols:
        raise ValueError(f"emt_clusters: symbols must be EMT metals {EMT_ELEMENTS}, got {symbols}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = int(rng.integers(lo, hi + 1))
        radius = (3.0 * m * volume_per_atom / (4.0 * np.pi)) ** (1.0 / 3.0)
        pos = random_cluster_positions(m, radius, min_dist, rng, max_tries=max_tries)
        syms = [symbols[i] for i in rng.integers(0, len(symbols), size=m)]
        out.append(_label(Atoms(syms, positions=pos), EMT(), stress=False))
    return out


def emt_bulk(
    n: int,
    symbols: tuple[str, ...] = ("Cu",),
    a: float = 3.61,
    size: tuple[int, int, int] = (2, 2, 2),
    cubic: bool = False,
    max_strain: float = 0.04,
    rattle: float = 0.08,
    seed: int = 0,
) -> list[Atoms]:
    """``n`` rattled, strained periodic fcc cells labelled by EMT (energy, forces, stress).

    Each cell is fcc with lattice constant ``a`` (A): the 1-atom primitive cell (``cubic=False``,
    lattice vectors at 60 degrees) or the 4-atom cubic cell, repeated ``size`` times, with sites
    occupied by elements drawn uniformly from ``symbols``. A random *symmetric* strain
    epsilon (entries uniform in [-max_strain, max_strain], then symmetrised) deforms the cell
    and the positions with it, h -> h (1 + epsilon) (rows of h are lattice vectors), which makes
    the cell triclinic in general; then every atom is displaced by a Gaussian of standard
    deviation ``rattle`` (A). Deterministic in ``seed``.

    >>> cells = emt_bulk(2, seed=0)
    >>> [len(c) for c in cells], cells[0].pbc.tolist(), cells[0].get_stress(voigt=False).shape
    ([8, 8], [True, True, True], (3, 3))
    >>> angles = cells[0].cell.angles()
    >>> bool(np.all(np.abs(angles - 60.0) > 1e-3))   # strained away from the 60-degree cell
    True
    """
    bad = [s for s in symbols if s not in EMT_ELEMENTS]
    if bad or not symbols:
        raise ValueError(f"emt_bulk: symbols must be EMT metals {EMT_ELEMENTS}, got {symbols}")
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=a, cubic=cubic).repeat(size)
    out = []
    for _ in range(n):
        atoms = base.copy()
        atoms.set_chemical_symbols([symbols[i] for i in rng.integers(0, len(symbols), size=len(atoms))])
        eps = rng.uniform(-max_strain, max_strain, size=(3, 3))   # [3, 3]
        eps = 0.5 * (eps + eps.T)                                  # symmetric strain
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.positions += rattle * rng.normal(size=(len(atoms), 3))  # [N, 3]
        out.append(_label(atoms, EMT(), stress=True))
    return out


def xtb_molecule_md(
    n: int,
    molecule: str = "CH3CH2OH",
    temperature: float = 500.0,
    timestep: float = 0.5,
    every: int = 10,
    equilibration: int = 20,
    thermostat: str = "langevin",
    friction: float = 0.02,
    method: str = "GFN2-xTB",
    accuracy: float = 0.01,
    num_threads: int | None = 1,
    seed: int = 0,
) -> list[Atoms]:
    """``n`` frames of a GFN2-xTB molecular-dynamics trajectory (an MD17-style data set).

    The molecule (an ``ase.build.molecule`` name, default ethanol) starts from ASE's geometry
    with Maxwell-Boltzmann velocities at ``temperature`` (K) and is integrated with time step
    ``timestep`` (fs), by a Langevin thermostat (``thermostat="langevin"``, friction in 1/fs)
    or by plain velocity Verlet (``"verlet"``, NVE). After ``equilibration`` steps, every
    ``every``-th step is kept, labelled with the energy and forces that the tight-binding
    calculation (``tblite.ase.TBLite(method=method, accuracy=accuracy)``) gave at that step.
    Costs ``equilibration + n * every`` calculations (on ethanol about 0.02 s each on one core).

    tblite starts each SCF from the previous step's wavefunction, so a label depends on the
    history at the level of the SCF convergence; the default ``accuracy=0.01`` (100 times
    tighter than tblite's default) keeps a fresh calculation on the same frame within a few
    1e-6 eV/A of the label. ``num_threads`` limits OpenMP (through ``threadpoolctl``, if
    installed) during the run: on a molecule this small more threads only add overhead, and on
    a busy machine OpenMP spin-waiting made it 100 times slower; it also makes the run
    bit-for-bit deterministic in ``seed``.

    >>> frames = xtb_molecule_md(2, every=2, equilibration=2, seed=0)
    >>> len(frames), len(frames[0]), frames[0].get_forces().shape
    (2, 9, (9, 3))
    """
    from ase import units
    from ase.build import molecule as build_molecule
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    from tblite.ase import TBLite

    if n < 1 or every < 1 or equilibration < 0:
        raise ValueError(f"xtb_molecule_md: need n >= 1, every >= 1, equilibration >= 0, got {n}, {every}, {equilibration}")
    rng = np.random.RandomState(seed)   # ASE's MD classes take a legacy RandomState
    atoms = build_molecule(molecule)
    atoms.calc = TBLite(method=method, accuracy=accuracy, verbosity=0)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    if thermostat == "langevin":
        dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature,
                       friction=friction / units.fs, fixcm=False, rng=rng)
    elif thermostat == "verlet":
        dyn = VelocityVerlet(atoms, timestep * units.fs)
    else:
        raise ValueError(f"xtb_molecule_md: thermostat must be 'langevin' or 'verlet', got {thermostat!r}")
    frames = []
    with _omp_threads(num_threads):
        dyn.run(equilibration)
        for _ in range(n):
            dyn.run(every)
            # The integrator has just evaluated the calculator at these positions: reuse it.
            frames.append(_label(atoms, atoms.calc, stress=False))
    return frames


def _omp_threads(num_threads: int | None):
    """A context limiting OpenMP to ``num_threads`` (no-op if None or threadpoolctl is absent)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if num_threads is None or threadpool_limits is None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=num_threads, user_api="openmp")


def write_extxyz(path, atoms_list: list[Atoms]) -> None:
    """Write labelled structures to an extended-XYZ file (ASE's writer; labels kept).

    Energy and stress are written at full precision, positions and forces with 8 decimals.
    """
    import ase.io

    ase.io.write(str(path), list(atoms_list), format="extxyz")


def read_extxyz(path) -> list[Atoms]:
    """Read every structure of an extended-XYZ file; labels come back in a SinglePointCalculator.

    >>> import tempfile, os
    >>> data = emt_bulk(2, seed=1)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_extxyz(os.path.join(d, "x.extxyz"), data)
    ...     back = read_extxyz(os.path.join(d, "x.extxyz"))
    >>> len(back), back[1].get_potential_energy() == data[1].get_potential_energy()
    (2, True)
    """
    import ase.io

    return ase.io.read(str(path), index=":", format="extxyz")


def _result(atoms: Atoms, g: int, name: str):
    """The stored label ``name`` of structure ``g``, or None; refuses stale labels."""
    calc = atoms.calc
    if calc is None or name not in calc.results:
        return None
    changes = calc.check_state(atoms)
    if changes:
        raise ValueError(
            f"collate: atoms_list[{g}] was changed ({', '.join(changes)}) after its labels were "
            "computed; relabel it or drop its calculator"
        )
    return np.asarray(calc.results[name], dtype=np.float64)


def collate(atoms_list: list[Atoms], dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Batch G labelled structures into flat tensors (PyTorch Geometric's ``batch`` layout).

    Returns a dict with N = total number of atoms:

    ========  ============  ==========================================================
    numbers   [N] long      atomic numbers
    pos       [N, 3]        positions (A), ``dtype``
    cell      [G, 3, 3]     rows = lattice vectors (A); zeros for a structure without cell
    pbc       [G, 3] bool   periodic directions
    batch     [N] long      structure index of every atom
    natoms    [G] long      atoms per structure
    energy    [G]           eV (NaN where a structure has no energy label)
    forces    [N, 3]        eV/A (NaN rows where absent)
    stress    [G, 3, 3]     eV/A^3, ASE's sign, full symmetric matrix (NaN where absent)
    ========  ============  ==========================================================

    Labels are read from each structure's calculator results; a structure changed after it
    was labelled raises ``ValueError``.

    >>> data = emt_clusters(1, natoms=(3, 3), seed=1) + emt_bulk(1, size=(1, 1, 2), seed=1)
    >>> b = collate(data)
    >>> b["natoms"].tolist(), b["batch"].tolist(), b["pbc"].tolist()
    ([3, 2], [0, 0, 0, 1, 1], [[False, False, False], [True, True, True]])
    >>> b["stress"][0].isnan().all().item(), b["stress"][1].isnan().any().item()
    (True, False)
    >>> torch.equal(b["stress"][1], b["stress"][1].T)
    True
    """
    if isinstance(atoms_list, Atoms):
        raise TypeError("collate: atoms_list must be a list of ase.Atoms, got a single ase.Atoms (wrap it in a list)")
    atoms_list = list(atoms_list)
    if not atoms_list:
        raise ValueError("collate: atoms_list is empty; expected at least one ase.Atoms")
    for g, atoms in enumerate(atoms_list):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"collate: atoms_list[{g}] must be an ase.Atoms, got {type(atoms).__name__}")
    natoms = [len(a) for a in atoms_list]
    nan = float("nan")
    energy, forces, stress = [], [], []
    for g, atoms in enumerate(atoms_list):
        e = _result(atoms, g, "energy")
        energy.append(nan if e is None else float(e))
        f = _result(atoms, g, "forces")
        forces.append(np.full((len(atoms), 3), nan) if f is None else f.reshape(len(atoms), 3))
        s = _result(atoms, g, "stress")
        if s is None:
            s = np.full((3, 3), nan)
        elif s.shape == (6,):
            s = voigt_6_to_full_3x3_stress(s)
        stress.append(s.reshape(3, 3))
    return {
        "numbers": torch.as_tensor(np.concatenate([a.numbers for a in atoms_list]), dtype=torch.long),  # [N]
        "pos": torch.as_tensor(np.concatenate([a.positions for a in atoms_list]), dtype=dtype),  # [N, 3]
        "cell": torch.as_tensor(np.stack([a.cell.array for a in atoms_list]), dtype=dtype),      # [G, 3, 3]
        "pbc": torch.as_tensor(np.stack([a.pbc for a in atoms_list]), dtype=torch.bool),         # [G, 3]
        "batch": torch.repeat_interleave(torch.arange(len(atoms_list)), torch.tensor(natoms)),  # [N]
        "natoms": torch.tensor(natoms, dtype=torch.long),                                        # [G]
        "energy": torch.tensor(energy, dtype=dtype),                                             # [G]
        "forces": torch.as_tensor(np.concatenate(forces), dtype=dtype),                          # [N, 3]
        "stress": torch.as_tensor(np.stack(stress), dtype=dtype),                                # [G, 3, 3]
    }
