"""minequi.physics_data: seeded generators, labels equal to a fresh reference calculation,
the minimum-distance rule and its cap, collate's shapes and values, the extxyz round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ase")
from ase.calculators.emt import EMT  # noqa: E402

from minequi.physics_data import (  # noqa: E402
    collate,
    emt_bulk,
    emt_clusters,
    random_cluster_positions,
    read_extxyz,
    write_extxyz,
    xtb_molecule_md,
)


def _same(a, b):
    return (
        a.get_chemical_symbols() == b.get_chemical_symbols()
        and np.array_equal(a.positions, b.positions)
        and np.array_equal(a.cell.array, b.cell.array)
        and a.get_potential_energy() == b.get_potential_energy()
        and np.array_equal(a.get_forces(), b.get_forces())
    )


@pytest.mark.parametrize("gen", [
    lambda seed: emt_clusters(3, symbols=("Cu", "Au"), seed=seed),
    lambda seed: emt_bulk(3, symbols=("Cu", "Ag"), seed=seed),
])
def test_deterministic_per_seed(gen):
    a, b, c = gen(0), gen(0), gen(1)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not all(_same(x, y) for x, y in zip(a, c))   # control: another seed differs


def test_xtb_md_deterministic_and_moving():
    a = xtb_molecule_md(3, every=2, equilibration=2, seed=0)
    b = xtb_molecule_md(3, every=2, equilibration=2, seed=0)
    c = xtb_molecule_md(3, every=2, equilibration=2, seed=1)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not _same(a[0], c[0])
    assert not np.array_equal(a[0].positions, a[1].positions)   # frames are different steps
    assert len(a[0]) == 9 and a[0].get_forces().shape == (9, 3)


def test_xtb_labels_equal_fresh_calculation():
    from tblite.ase import TBLite
    from threadpoolctl import threadpool_limits

    frames = xtb_molecule_md(3, every=3, equilibration=3, thermostat="verlet", seed=2)
    with threadpool_limits(limits=1, user_api="openmp"):
        for frame in frames:
            fresh = frame.copy()
            # tblite restarts each SCF from the previous wavefunction: a fresh calculation
            # agrees to the SCF convergence (measured 1.5e-12 eV and 2.6e-6 eV/A at accuracy=0.01)
            fresh.calc = TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0)
            assert abs(fresh.get_potential_energy() - frame.get_potential_energy()) < 1e-10
            assert np.abs(fresh.get_forces() - frame.get_forces()).max() < 3e-4


def test_min_distance_respected():
    data = emt_clusters(20, natoms=(10, 20), min_dist=2.3, seed=4)
    for a in data:
        d = a.get_all_distances() + 1e9 * np.eye(len(a))
        assert d.min() >= 2.3
    # control: with min_dist=0 random points do come closer than 2.3 A somewhere
    rng = np.random.default_rng(0)
    x = random_cluster_positions(20, radius=5.0, min_dist=0.0, rng=rng)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1) + 1e9 * np.eye(20)
    assert d.min() < 2.3


def test_cap_raises_clear_error():
    with pytest.raises(RuntimeError, match="max_tries=100"):
        emt_clusters(1, natoms=(30, 30), min_dist=3.0, volume_per_atom=5.0, max_tries=100, seed=0)
    with pytest.raises(ValueError, match="EMT metals"):
        emt_clusters(1, symbols=("Fe",))


def test_labels_equal_fresh_emt():
    for a in emt_clusters(3, symbols=("Cu", "Au"), seed=5) + emt_bulk(3, cubic=True, size=(1, 1, 2), seed=5):
        fresh = a.copy()
        fresh.calc = EMT()
        assert fresh.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-12)
        assert np.abs(fresh.get_forces() - a.get_forces()).max() < 1e-12
        if a.pbc.all():
            assert np.abs(fresh.get_stress() - a.get_stress()).max() < 1e-12


def test_bulk_is_strained_and_rattled():
    a = emt_bulk(1, max_strain=0.04, rattle=0.05, seed=0)[0]
    assert not np.allclose(a.cell.angles(), 60.0, atol=1e-3)   # triclinic after the strain
    assert np.abs(a.get_forces()).max() > 1e-3                 # rattled: nonzero forces
    s = a.get_stress(voigt=False)
    assert np.abs(s - s.T).max() == 0.0
    b = emt_bulk(1, max_strain=0.0, rattle=0.0, seed=0)[0]     # control: perfect crystal
    assert np.abs(b.get_forces()).max() < 1e-10


def test_collate_shapes_and_values():
    clusters = emt_clusters(2, natoms=(3, 5), seed=6)
    cells = emt_bulk(2, size=(1, 1, 3), seed=6)
    data = clusters + cells
    b = collate(data, dtype=torch.float32)
    n = sum(len(a) for a in data)
    assert b["numbers"].dtype == torch.long and b["numbers"].shape == (n,)
    assert b["pos"].dtype == torch.float32 and b["pos"].shape == (n, 3)
    assert b["cell"].shape == (4, 3, 3) and b["pbc"].dtype == torch.bool and b["pbc"].shape == (4, 3)
    assert b["batch"].tolist() == sum(([g] * len(a) for g, a in enumerate(data)), [])
    assert b["natoms"].tolist() == [len(a) for a in data]
    assert b["energy"].shape == (4,) and b["forces"].shape == (n, 3) and b["stress"].shape == (4, 3, 3)
    b64 = collate(data)
    for g, a in enumerate(data):
        m = b64["batch"] == g
        assert torch.equal(b64["pos"][m], torch.as_tensor(a.positions))
        assert torch.equal(b64["numbers"][m], torch.as_tensor(a.numbers))
        assert torch.equal(b64["forces"][m], torch.as_tensor(a.get_forces()))
        assert b64["energy"][g].item() == a.get_potential_energy()
        assert torch.equal(b64["cell"][g], torch.as_tensor(a.cell.array))
        if a.pbc.all():
            assert torch.equal(b64["stress"][g], torch.as_tensor(a.get_stress(voigt=False)))
        else:
            assert b64["stress"][g].isnan().all() and not b64["pbc"][g].any()


def test_collate_bad_input():
    data = emt_clusters(1, natoms=(3, 3), seed=0)
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(TypeError, match="list of ase.Atoms"):
        collate(data[0])
    with pytest.raises(TypeError, match=r"atoms_list\[1\]"):
        collate([data[0], "H2O"])
    moved = data[0].copy()
    moved.calc = data[0].calc
    moved.positions += 0.1
    with pytest.raises(ValueError, match="changed"):
        collate([moved])
    bare = data[0].copy()          # no calculator: labels NaN, structure kept
    b = collate([bare])
    assert b["energy"].isnan().all() and b["forces"].isnan().all() and not b["pos"].isnan().any()


def test_extxyz_round_trip(tmp_path):
    data = emt_clusters(2, seed=7) + emt_bulk(2, seed=7)
    path = tmp_path / "data.extxyz"
    write_extxyz(path, data)
    back = read_extxyz(path)
    a, b = collate(data), collate(back)
    assert torch.equal(a["numbers"], b["numbers"]) and torch.equal(a["pbc"], b["pbc"])
    assert torch.equal(a["energy"], b["energy"])                        # written in full
    assert torch.equal(a["stress"].nan_to_num(7.0), b["stress"].nan_to_num(7.0))
    assert torch.equal(a["cell"], b["cell"])
    # positions and forces are written with 8 decimals (round-off <= 5e-9)
    assert (a["pos"] - b["pos"]).abs().max() < 5e-7
    assert (a["forces"] - b["forces"]).abs().max() < 5e-7
