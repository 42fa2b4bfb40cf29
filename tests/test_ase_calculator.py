"""Tests of minequi.ase_calculator.MinequiCalculator: the ASE results equal the model's outputs
(energy, forces, stress as ASE's Voigt 6-vector), agree with ASE's own finite differences
(ase.calculators.fd), stress only for fully periodic cells, and `import minequi` does not import
ase (the library needs only torch and numpy)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

ase = pytest.importorskip("ase")
from ase.build import bulk, molecule  # noqa: E402
from ase.calculators.calculator import PropertyNotImplementedError  # noqa: E402
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress  # noqa: E402

from minequi.ase_calculator import MinequiCalculator  # noqa: E402
from minequi.potential import InteratomicPotential  # noqa: E402

F64 = torch.float64


def model(species=(1, 6, 8, 29), seed=0):
    torch.manual_seed(seed)
    m = InteratomicPotential(list(species), cutoff=3.5, irreps_hidden="8x0e+4x1o+2x2e", num_layers=2,
                             num_basis=6, avg_num_neighbors=8.0)
    with torch.no_grad():
        for lin in m.linears:
            lin.bias.normal_()
        m.atomic_energies.normal_()
    return m  # float32 parameters: the calculator makes its own float64 copy


def rattled_copper(seed=0):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))  # 8 atoms
    atoms.rattle(0.1, seed=seed)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.02 * np.random.default_rng(seed).standard_normal((3, 3))),
                   scale_atoms=True)  # a triclinic strain
    return atoms


def test_periodic_results_equal_the_model_and_ase_finite_differences():
    m = model()
    atoms = rattled_copper()
    atoms.calc = MinequiCalculator(m)
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert f.shape == (8, 3) and s.shape == (6,)
    # the model itself, in float64
    m64 = m.double().eval()
    out = m64(torch.tensor(atoms.numbers), torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)[None],
              compute_stress=True)
    assert abs(e - float(out["energy"][0])) < 1e-12
    np.testing.assert_allclose(f, out["forces"].numpy(), atol=1e-12, rtol=0)
    S = out["stress"][0].numpy()
    np.testing.assert_allclose(s, [S[0, 0], S[1, 1], S[2, 2], S[1, 2], S[0, 2], S[0, 1]], atol=1e-14, rtol=0)
    assert atoms.get_potential_energy(force_consistent=True) == e  # free_energy
    # ASE's numerical derivatives of get_potential_energy
    f_num = calculate_numerical_forces(atoms, eps=1e-5)
    s_num = calculate_numerical_stress(atoms, eps=1e-6)
    err_f, err_s = np.abs(f - f_num).max(), np.abs(s - s_num).max()
    print(f"ASE finite differences: forces {err_f:.2e} (max |F| {np.abs(f).max():.2f}), "
          f"stress {err_s:.2e} (max |sigma| {np.abs(s).max():.3f})")
    assert err_f < 1e-7 and err_s < 5e-9  # measured 1.0e-9 and 4.9e-11
    assert np.abs(f).max() > 1e-2 and np.abs(s).max() > 1e-3


def test_molecule_forces_and_no_stress():
    m = model()
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    atoms.calc = MinequiCalculator(m)
    f = atoms.get_forces()
    f_num = calculate_numerical_forces(atoms, eps=1e-5)
    err = np.abs(f - f_num).max()
    print(f"ethanol: forces vs ASE finite differences {err:.2e}")
    assert err < 1e-6 and np.abs(f).max() > 1e-2  # measured 9.3e-9
    np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-12)  # translation invariance: no net force
    with pytest.raises(PropertyNotImplementedError, match="stress needs a fully periodic cell"):
        atoms.get_stress()
    # negative control: the results follow the atoms (a moved atom changes the energy)
    e0 = atoms.get_potential_energy()
    atoms.positions[0] += 0.2
    assert abs(atoms.get_potential_energy() - e0) > 1e-4


def test_partial_periodicity_and_float32():
    m = model()
    slab = rattled_copper()
    slab.pbc = (True, True, False)
    slab.calc = MinequiCalculator(m)
    e = slab.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()
    full = slab.copy()
    full.pbc = True
    full.calc = MinequiCalculator(m)
    assert abs(full.get_potential_energy() - e) > 1e-4  # the z images do count when periodic
    slab.calc = MinequiCalculator(m, dtype=torch.float32)
    assert abs(slab.get_potential_energy() - e) < 1e-4 * max(1.0, abs(e))


def test_unknown_species_and_bad_arguments():
    calc = MinequiCalculator(model(species=(1, 8)))
    atoms = molecule("CH4")
    atoms.calc = calc
    with pytest.raises(ValueError, match="atomic number 6, which is not among the model's species"):
        atoms.get_potential_energy()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        MinequiCalculator(lambda x: x)
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
        MinequiCalculator(model(), dtype=torch.int64)


def test_import_minequi_does_not_import_ase():
    # one fresh interpreter; the second line is the negative control (the calculator does import ase)
    code = ("import sys, minequi; print('ase' in sys.modules, 'minequi.ase_calculator' in sys.modules); "
            "import minequi.ase_calculator; print('ase' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"], out
