"""energy_forces_stress: finite differences, ASE's Lennard-Jones, O(3) equivariance, training gradients, batches."""
import numpy as np
import pytest
import torch

from minequi.forces import energy_forces_stress
from minequi.neighbor_list import batched_neighbor_list, neighbor_list
from minequi.testing import e3_sampler, equivariance_error, haar_o3, permutation_sampler, product_sampler

SIGMA, EPS, RC = 2.3, 0.4, 5.0
RO = 0.66 * RC  # ASE's default onset of the smooth cutoff


def lj_pair(r2, epsilon=EPS):
    """ASE's LennardJones(smooth=True) pair energy of squared distances r2 (jax-md's cutoff in r^2)."""
    c6 = (SIGMA ** 2 / r2) ** 3
    u = 4 * epsilon * (c6 ** 2 - c6)
    rc2, ro2 = RC ** 2, RO ** 2
    fc = torch.where(r2 < ro2, torch.ones_like(r2), (rc2 - r2) ** 2 * (rc2 + 2 * r2 - 3 * ro2) / (rc2 - ro2) ** 3)
    return u * fc


def lj_energy(pos, cell, pbc=True, epsilon=EPS):
    """Smooth Lennard-Jones energy of one structure on minequi's neighbour list."""
    ei, S = neighbor_list(pos.detach(), RC, None if cell is None else cell.detach(), pbc=pbc if cell is not None else False)
    vec = pos[ei[0]] - pos[ei[1]] + (S @ cell if cell is not None else 0.0)  # [E, 3]
    return 0.5 * lj_pair(vec.square().sum(-1), epsilon).sum()


def copper_like(seed, n_rep=(2, 2, 2), strain=0.03, rattle=0.1):
    """A rattled, strained (triclinic) fcc cell with LJ-friendly spacing; float64 tensors."""
    from ase.build import bulk

    atoms = bulk("Ar", "fcc", a=3.7, cubic=True).repeat(n_rep)
    rng = np.random.default_rng(seed)
    F = np.eye(3) + strain * rng.standard_normal((3, 3))
    atoms.set_cell(atoms.cell[:] @ F, scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms, torch.tensor(atoms.positions), torch.tensor(atoms.cell[:])


def fd_forces(energy, pos, h=1e-5):
    out = torch.zeros_like(pos)
    for n in range(pos.shape[0]):
        for a in range(3):
            p, m = pos.clone(), pos.clone()
            p[n, a] += h
            m[n, a] -= h
            out[n, a] = -(energy(p) - energy(m)) / (2 * h)
    return out


def fd_stress(energy_fn, pos, cell, h=1e-6):
    """(1/V) dE/d eps by central differences of a symmetric strain x (I + eps), C (I + eps)."""
    V = torch.linalg.det(cell).abs()
    out = torch.zeros(3, 3, dtype=pos.dtype)
    for a in range(3):
        for b in range(3):
            e = torch.zeros(3, 3, dtype=pos.dtype)
            e[a, b] += 0.5
            e[b, a] += 0.5
            Ep = energy_fn(pos @ (torch.eye(3, dtype=pos.dtype) + h * e), cell @ (torch.eye(3, dtype=pos.dtype) + h * e))
            Em = energy_fn(pos @ (torch.eye(3, dtype=pos.dtype) - h * e), cell @ (torch.eye(3, dtype=pos.dtype) - h * e))
            out[a, b] = (Ep - Em) / (2 * h) / V
    return out


def test_forces_equal_finite_differences():
    _, pos, cell = copper_like(0, n_rep=(1, 1, 2))
    E, F, S = energy_forces_stress(lj_energy, pos, cell)
    F_fd = fd_forces(lambda p: lj_energy(p, cell), pos)
    err = float((F - F_fd).abs().max())
    print("force vs central FD:", err, "max |F|", float(F.abs().max()))
    assert err < 3e-7  # measured 2.6e-9 (h = 1e-5: truncation + rounding)
    # negative control: forces of a different potential (epsilon changed by 1 %) differ far beyond the tolerance
    F_other = fd_forces(lambda p: lj_energy(p, cell, epsilon=EPS * 1.01), pos)
    assert float((F - F_other).abs().max()) > 30 * 3e-7


def test_stress_equals_finite_difference_strain():
    _, pos, cell = copper_like(1, n_rep=(1, 1, 2))
    E, F, S = energy_forces_stress(lj_energy, pos, cell)
    S_fd = fd_stress(lj_energy, pos, cell)
    err = float((S - S_fd).abs().max())
    print("stress vs FD strain:", err, "max |S|", float(S.abs().max()))
    assert err < 3e-9  # measured 3.2e-11
    assert torch.allclose(S, S.T, atol=1e-14, rtol=0)
    # negative control: an energy that sees the strain of the positions but not of the cell
    # (periodic images not strained) has a different strain derivative
    _, _, S_bad = energy_forces_stress(lambda p, c: lj_energy(p, c.detach()), pos, cell)
    assert float((S_bad - S_fd).abs().max()) > 30 * 3e-9


def test_matches_ase_lennard_jones():
    """Energy, forces and stress equal ASE's LennardJones(smooth=True) on a rattled, strained triclinic cell."""
    from ase.calculators.lj import LennardJones

    atoms, pos, cell = copper_like(2)
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPS, rc=RC, ro=RO, smooth=True)
    E_ase = atoms.get_potential_energy()
    F_ase = torch.tensor(atoms.get_forces())
    S_ase = torch.tensor(atoms.get_stress(voigt=False))
    E, F, S = energy_forces_stress(lj_energy, pos, cell)
    errs = abs(float(E) - E_ase), float((F - F_ase).abs().max()), float((S - S_ase).abs().max())
    print("vs ASE LJ (energy, forces, stress):", errs, "scales", E_ase, float(F_ase.abs().max()), float(S_ase.abs().max()))
    # measured 1.4e-14 (E ~ -76 eV), 1.3e-14 (|F| ~ 7 eV/A), 1.8e-16 (|sigma| ~ 0.1 eV/A^3)
    assert errs[0] < 2e-12 and errs[1] < 2e-12 and errs[2] < 2e-14
    # negative control: the opposite sign convention (VASP's, -sigma) is far off
    assert float((-S - S_ase).abs().max()) > 1e-4
    # the stress is not trivially zero
    assert float(S_ase.abs().max()) > 1e-3


def test_equivariance_of_forces_and_stress():
    """F(pos Q^T, C Q^T) = F Q^T and sigma -> Q sigma Q^T for Haar Q in O(3) (reflections included)."""
    _, pos, cell = copper_like(3, n_rep=(1, 1, 2))

    def f(pos, cell):
        E, F, S = energy_forces_stress(lj_energy, pos, cell)
        return E, F, S

    err = equivariance_error(
        f, (pos, cell), haar_o3,
        act_in=lambda Q, xs: (xs[0] @ Q.T, xs[1] @ Q.T),
        act_out=lambda Q, ys: (ys[0], ys[1] @ Q.T, Q @ ys[2] @ Q.T),
        n_samples=4,
    )
    print("equivariance error:", err)
    assert err < 4e-12  # measured 3.9e-14
    # E(3) x S_N: translations (atoms crossing the cell faces) and permutations of the atoms as well
    n = pos.shape[0]
    err = equivariance_error(
        f, (pos, cell), product_sampler(e3_sampler(scale=3.0), permutation_sampler(n)),
        act_in=lambda g, xs: (xs[0][g[1]] @ g[0][0].T + g[0][1], xs[1] @ g[0][0].T),
        act_out=lambda g, ys: (ys[0], ys[1][g[1]] @ g[0][0].T, g[0][0] @ ys[2] @ g[0][0].T),
        n_samples=4,
    )
    print("E(3) x S_N error:", err)
    assert err < 4e-12
    # negative control: stress transformed as a vector (Q sigma) instead of a rank-2 tensor
    bad = equivariance_error(
        f, (pos, cell), haar_o3,
        act_in=lambda Q, xs: (xs[0] @ Q.T, xs[1] @ Q.T),
        act_out=lambda Q, ys: (ys[0], ys[1] @ Q.T, Q @ ys[2]),
        n_samples=4,
    )
    assert bad > 1e-4


def test_create_graph_force_loss_backpropagates():
    """d(sum F^2)/d(epsilon) by autograd through the forces equals its finite difference."""
    _, pos, cell = copper_like(4, n_rep=(1, 1, 1))

    def loss(eps_param, create_graph):
        E, F, S = energy_forces_stress(lambda p, c: lj_energy(p, c, epsilon=eps_param), pos, cell,
                                       create_graph=create_graph)
        return F.square().sum() + 1e3 * S.square().sum()

    e = torch.tensor(EPS, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(loss(e, True), e)
    h = 1e-6
    g_fd = (loss(torch.tensor(EPS + h, dtype=torch.float64), False)
            - loss(torch.tensor(EPS - h, dtype=torch.float64), False)) / (2 * h)
    err = abs(float(g) - float(g_fd))
    print("training gradient vs FD:", err, "scale", float(g))
    assert err < 1e-8 * abs(float(g))  # measured 1.3e-10 relative (h = 1e-6)
    # without create_graph the outputs are detached: no gradient reaches the parameter
    E, F, S = energy_forces_stress(lambda p, c: lj_energy(p, c, epsilon=e), pos, cell)
    assert not F.requires_grad and not S.requires_grad and not E.requires_grad


def test_pos_from_upstream_graph_and_leaf():
    """pos need not require grad; a pos computed upstream stays connected (no detach)."""
    _, pos, cell = copper_like(5, n_rep=(1, 1, 1))
    E0, F0, S0 = energy_forces_stress(lj_energy, pos, cell)
    assert not pos.requires_grad and pos.grad is None
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    E, F, S = energy_forces_stress(lambda p, c: lj_energy(p, c), pos * scale, cell, create_graph=True)
    assert torch.allclose(F, F0, atol=1e-13, rtol=0) and torch.allclose(S, S0, atol=1e-13, rtol=0)
    (dE,) = torch.autograd.grad(E, scale)
    # dE/dscale = sum_n pos_n . dE/dpos_n = -sum pos * F
    assert abs(float(dE) + float((pos * F0).sum())) < 1e-9


def test_batch_no_gradient_crosses_and_equals_single():
    _, p0, c0 = copper_like(6, n_rep=(1, 1, 1))
    _, p1, c1 = copper_like(7, n_rep=(1, 1, 2))
    pos = torch.cat([p0, p1])
    cell = torch.stack([c0, c1])
    batch = torch.cat([torch.zeros(len(p0), dtype=torch.int64), torch.ones(len(p1), dtype=torch.int64)])

    def batched_energy(pos, cell):
        ei, S = batched_neighbor_list(pos.detach(), RC, cell.detach(), None, batch)
        shift = torch.einsum("ea,eab->eb", S, cell[batch[ei[1]]])  # [E, 3]
        vec = pos[ei[0]] - pos[ei[1]] + shift  # [E, 3]
        e_edge = 0.5 * lj_pair(vec.square().sum(-1))  # [E]
        return torch.zeros(2, dtype=pos.dtype).index_add(0, batch[ei[1]], e_edge)  # [G]

    E, F, S = energy_forces_stress(batched_energy, pos, cell, batch=batch)
    assert E.shape == (2,) and F.shape == pos.shape and S.shape == (2, 3, 3)
    for g, (p, c) in enumerate([(p0, c0), (p1, c1)]):
        Eg, Fg, Sg = energy_forces_stress(lj_energy, p, c)
        m = batch == g
        assert abs(float(E[g] - Eg)) < 1e-10
        assert float((F[m] - Fg).abs().max()) < 1e-12
        assert float((S[g] - Sg).abs().max()) < 1e-13
    # no gradient crosses: the Jacobian of E[0] with respect to the atoms of structure 1 is exactly zero
    x = pos.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(batched_energy(x, cell)[0], x)
    assert float(g0[batch == 1].abs().max()) == 0.0 and float(g0[batch == 0].abs().max()) > 0
    # negative control: an energy that mixes the structures (a global sum per graph) does couple them
    (g_mix,) = torch.autograd.grad(batched_energy(x, cell).sum() * batched_energy(x, cell)[0], x)
    assert float(g_mix[batch == 1].abs().max()) > 0


def test_dtype_follows_input():
    _, pos, cell = copper_like(10, n_rep=(1, 1, 1))
    E, F, S = energy_forces_stress(lj_energy, pos.float(), cell.float())
    E64, F64, S64 = energy_forces_stress(lj_energy, pos, cell)
    assert E.dtype == F.dtype == S.dtype == torch.float32
    assert float((F.double() - F64).abs().max()) < 1e-3 * float(F64.abs().max())


def test_no_cell_and_compute_stress_flags():
    _, pos, cell = copper_like(8, n_rep=(1, 1, 1))
    E, F, S = energy_forces_stress(lambda p, c: lj_energy(p, None), pos)
    assert S is None and F.shape == pos.shape
    # a slab: stress only when asked
    E, F, S = energy_forces_stress(lambda p, c: lj_energy(p, c, (True, True, False)), pos, cell,
                                   pbc=(True, True, False))
    assert S is None
    _, _, S = energy_forces_stress(lambda p, c: lj_energy(p, c, (True, True, False)), pos, cell,
                                   pbc=(True, True, False), compute_stress=True)
    assert S.shape == (3, 3)
    _, _, S = energy_forces_stress(lj_energy, pos, cell, compute_stress=False)
    assert S is None


def test_bad_inputs():
    pos = torch.zeros(2, 3, dtype=torch.float64)
    f = lambda p, c: p.sum()
    with pytest.raises(TypeError, match="energy_fn must be callable"):
        energy_forces_stress(None, pos)
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\]"):
        energy_forces_stress(f, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"cell must have shape \[3, 3\]"):
        energy_forces_stress(f, pos, torch.eye(3, dtype=torch.float64)[None])
    with pytest.raises(ValueError, match=r"cell must have shape \[G, 3, 3\]"):
        energy_forces_stress(lambda p, c: p.sum(0), pos, torch.eye(3, dtype=torch.float64),
                             batch=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="cell dtype"):
        energy_forces_stress(f, pos, torch.eye(3, dtype=torch.float32))
    with pytest.raises(ValueError, match="compute_stress=True needs a cell"):
        energy_forces_stress(f, pos, compute_stress=True)
    with pytest.raises(ValueError, match="must return a scalar"):
        energy_forces_stress(lambda p, c: p.sum(0), pos)
    with pytest.raises(ValueError, match=r"must return energies \[G\] = \[1\]"):
        energy_forces_stress(lambda p, c: p.sum(), pos, torch.eye(3, dtype=torch.float64)[None],
                             batch=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="must return a tensor"):
        energy_forces_stress(lambda p, c: 1.0, pos)


def test_ase_stress_convention_is_the_strain_derivative():
    """The convention documented in minequi.forces is ASE's: EMT's own stress equals (1/V) dE/d eps
    for the strain x (I + eps), C (I + eps), by central differences (and not its negative)."""
    from ase.calculators.emt import EMT

    atoms, _, _ = copper_like(9, n_rep=(2, 2, 2))
    atoms.set_chemical_symbols(["Cu"] * len(atoms))
    atoms.set_cell(atoms.cell[:] * 3.61 / 3.7 * 0.98, scale_atoms=True)  # compressed copper
    atoms.calc = EMT()
    sigma = atoms.get_stress(voigt=False)
    pos0, cell0, V = atoms.positions.copy(), atoms.cell[:].copy(), atoms.get_volume()

    def energy(eps):
        a = atoms.copy()
        a.calc = EMT()
        a.set_cell(cell0 @ (np.eye(3) + eps), scale_atoms=False)
        a.positions = pos0 @ (np.eye(3) + eps)
        return a.get_potential_energy()

    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            e = np.zeros((3, 3))
            e[a, b] += 0.5
            e[b, a] += 0.5
            fd[a, b] = fd[b, a] = (energy(h * e) - energy(-h * e)) / (2 * h) / V
    err = np.abs(fd - sigma).max()
    print("ASE EMT stress vs (1/V) dE/d eps:", err, "scale", np.abs(sigma).max())
    assert err < 1e-8
    assert np.trace(sigma) < 0  # compressed: negative (compressive) stress, positive pressure
    assert np.abs(-fd - sigma).max() > 1e-3  # negative control: VASP's sign is the opposite


def test_forces_are_computed_under_no_grad():
    # (found in chapter 17: under torch.no_grad() the energy did not require grad and the
    # forces came back as zeros without an error)
    from minequi.forces import energy_forces_stress

    pos = torch.randn(5, 3, dtype=torch.float64)

    def energy(p, cell):
        d = p[:, None] - p[None]  # [N, N, 3]
        return 0.5 * (d.square().sum(-1) + 1.0).log().sum()

    e, f, _ = energy_forces_stress(energy, pos)
    with torch.no_grad():
        e0, f0, _ = energy_forces_stress(energy, pos)
    assert f.abs().max() > 0.1
    assert torch.equal(f0, f) and torch.equal(e0, e)
    assert not f0.requires_grad
