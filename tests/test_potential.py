"""Tests of minequi.potential.InteratomicPotential, as the ML-potential libraries test their models:
E(3) x S_N invariance of the energy and equivariance of forces and stress (Haar O(3) incl.
reflections, float64, minequi.testing) with negative controls; forces equal a finite-difference
gradient of the energy; stress equals a finite-difference strain derivative; energy additivity
for systems beyond the cutoff; no gradient crosses between structures in a batch; a continuous
first derivative when an atom crosses the cutoff (negative control: a hard cutoff); a cell and its
2x2x1 supercell; scale/shift fitting; training graphs; bad inputs; torch.compile."""
import math

import pytest
import torch

from minequi.potential import InteratomicPotential
from minequi.testing import (assert_equivariant, e3_sampler, equivariance_report, permutation_sampler,
                             product_sampler)

F64 = torch.float64
# Measured (float64, 4 samples each): energy and forces of two molecules 1.7e-14 (output
# scale 2.2), periodic energy/forces/stress 4.1e-14 (output scale 9.4).  Tolerances ~100x above.
EQ_TOL_MOLECULES = 2e-12
EQ_TOL_PERIODIC = 4e-12


def model(seed=0, species=(1, 6, 8), cutoff=3.0, **kw):
    torch.manual_seed(seed)
    kw = {"irreps_hidden": "8x0e+4x1o+2x2e", "num_layers": 2, "num_basis": 6, "avg_num_neighbors": 4.0, **kw}
    m = InteratomicPotential(list(species), cutoff=cutoff, **kw).double()
    with torch.no_grad():  # nonzero biases and shifts, so that nothing is accidentally zero
        for lin in m.linears:
            lin.bias.normal_()
        m.atomic_energies.normal_()
        m.scale.fill_(1.7)
    return m.eval()


def molecules(seed=0):
    """Two small molecules (7 and 5 atoms) in one batch."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.cat([1.2 * torch.randn(7, 3, dtype=F64, generator=g), 1.2 * torch.randn(5, 3, dtype=F64, generator=g)])
    numbers = torch.tensor([6, 1, 1, 8, 1, 6, 1, 8, 1, 1, 6, 1])
    batch = torch.tensor([0] * 7 + [1] * 5)
    return numbers, pos, batch


def crystal(seed=0, n=5, small=True, L=None):
    """A rattled triclinic cell; ``small``: edges shorter than the cutoff (several images of one atom)."""
    g = torch.Generator().manual_seed(seed)
    L = L if L is not None else 2.6 if small else 6.0
    cell = torch.tensor([[L, 0.0, 0.0], [0.7, L, 0.0], [-0.4, 0.5, L]], dtype=F64) + 0.1 * torch.randn(3, 3, dtype=F64, generator=g)
    frac = torch.rand(n, 3, dtype=F64, generator=g)
    numbers = torch.tensor([6, 8, 1, 6, 1, 8, 1, 1][:n])
    return numbers, frac @ cell, cell


# ----------------------------------------------------------------------------
# Symmetry
# ----------------------------------------------------------------------------
def mol_actions(forces_as_vectors=True):
    def act_in(g, inputs):
        (Q, t), perm = g
        numbers, pos, batch = inputs
        return numbers[perm], (pos @ Q.T + t)[perm], batch[perm]

    def act_out(g, out):
        (Q, _), perm = g
        energy, forces = out
        return energy, (forces @ Q.T if forces_as_vectors else forces)[perm]

    return act_in, act_out


def test_molecules_energy_invariant_forces_equivariant():
    m = model()
    numbers, pos, batch = molecules()
    f = lambda z, p, b: tuple(m(z, p, batch=b).values())  # noqa: E731  (energy [2], forces [12, 3])
    act_in, act_out = mol_actions()
    sample = product_sampler(e3_sampler(), permutation_sampler(12))
    report = assert_equivariant(f, (numbers, pos, batch), sample, act_in, act_out, n_samples=4,
                                atol=EQ_TOL_MOLECULES)
    print("molecules, E(3) x S_N:", report)
    assert report.scale > 0.1
    # negative control: forces treated as invariant fail under rotations
    _, wrong = mol_actions(forces_as_vectors=False)
    assert equivariance_report(f, (numbers, pos, batch), sample, act_in, wrong, n_samples=1).max_error > 1e-2


def cell_actions(stress_as_tensor=True):
    def act_in(g, inputs):
        (Q, t), perm = g
        numbers, pos, cell = inputs
        return numbers[perm], (pos @ Q.T + t)[perm], cell @ Q.T  # rows = lattice vectors rotate

    def act_out(g, out):
        (Q, _), perm = g
        energy, forces, stress = out
        return energy, (forces @ Q.T)[perm], (Q @ stress @ Q.T if stress_as_tensor else stress)

    return act_in, act_out


def test_periodic_energy_forces_stress_equivariant():
    m = model()
    numbers, pos, cell = crystal(n=5)
    f = lambda z, p, c: tuple(m(z, p, c, compute_stress=True).values())  # noqa: E731
    act_in, act_out = cell_actions()
    sample = product_sampler(e3_sampler(), permutation_sampler(5))
    report = assert_equivariant(f, (numbers, pos, cell), sample, act_in, act_out, n_samples=4,
                                atol=EQ_TOL_PERIODIC)
    print("periodic, E(3) x S_N incl. stress:", report)
    assert report.scale > 0.1
    out = m(numbers, pos, cell, compute_stress=True)
    assert out["stress"].shape == (1, 3, 3) and out["stress"].abs().max() > 1e-3
    torch.testing.assert_close(out["stress"], out["stress"].transpose(1, 2), atol=1e-14, rtol=0)
    # negative control: the stress treated as invariant fails
    _, wrong = cell_actions(stress_as_tensor=False)
    assert equivariance_report(f, (numbers, pos, cell), sample, act_in, wrong, n_samples=1).max_error > 1e-3


def test_periodic_images_matter():
    """Negative control of the periodic machinery: the same atoms without the cell give another energy."""
    m = model()
    numbers, pos, cell = crystal(n=5)
    assert (m.energy(numbers, pos, cell) - m.energy(numbers, pos)).abs() > 1e-3


# ----------------------------------------------------------------------------
# Forces and stress are derivatives of the energy
# ----------------------------------------------------------------------------
def test_forces_equal_finite_difference_gradient():
    """-F . v equals the central difference of E along v, for every coordinate of one molecule
    and for random directions of the whole batch."""
    m = model()
    numbers, pos, batch = molecules()
    forces = m(numbers, pos, batch=batch)["forces"]
    h = 1e-5
    g = torch.Generator().manual_seed(1)
    directions = [torch.zeros_like(pos).index_put_((torch.tensor([a]), torch.tensor([k])), torch.tensor(1.0, dtype=F64))
                  for a in range(7, 12) for k in range(3)]  # every coordinate of the second molecule
    directions += [v / v.norm() for v in torch.randn(3, *pos.shape, dtype=F64, generator=g)]  # unit directions
    errs = []
    with torch.no_grad():
        for v in directions:
            fd = (m.energy(numbers, pos + h * v, batch=batch).sum() - m.energy(numbers, pos - h * v, batch=batch).sum()) / (2 * h)
            errs.append(abs(float(fd + (forces * v).sum())))
    err = max(errs)
    print(f"forces vs central differences (h={h}): max error {err:.2e}, max |F| {float(forces.abs().max()):.2f}")
    assert err < 2e-7  # measured 1.9e-9 (truncation ~h^2 and rounding ~1e-16 |E| / h)
    assert forces.abs().max() > 0.1


def strained_energy(m, numbers, pos, cell, eps):
    """E at positions and cell deformed by (I + eps): rows map as x -> x (I + eps)."""
    F = torch.eye(3, dtype=F64) + eps
    with torch.no_grad():
        return float(m.energy(numbers, pos @ F, cell @ F))


@pytest.mark.parametrize("small, tol", [(True, 1.5e-7), (False, 5e-10)])  # measured 1.3e-9, 5.3e-12
def test_stress_equals_finite_difference_strain_derivative(small, tol):
    m = model()
    numbers, pos, cell = crystal(n=5, small=small)
    stress = m(numbers, pos, cell, compute_stress=True)["stress"][0]
    V = float(torch.linalg.det(cell).abs())
    h = 1e-5
    fd = torch.zeros(3, 3, dtype=F64)
    for a in range(3):
        for b in range(3):
            e = torch.zeros(3, 3, dtype=F64)
            e[a, b] += h / 2
            e[b, a] += h / 2
            fd[a, b] = (strained_energy(m, numbers, pos, cell, e) - strained_energy(m, numbers, pos, cell, -e)) / (2 * h * V)
    err = float((stress - fd).abs().max())
    print(f"stress vs strain finite differences (small cell={small}): max error {err:.2e}, "
          f"max |sigma| {float(stress.abs().max()):.3f}")
    assert err < tol
    assert stress.abs().max() > 1e-3


# ----------------------------------------------------------------------------
# Locality, batching, smoothness, periodicity
# ----------------------------------------------------------------------------
def test_energy_additive_beyond_cutoff():
    m = model()
    numbers, pos, batch = molecules()
    a, b = batch == 0, batch == 1
    far = pos.clone()
    far[b] += torch.tensor([40.0, 0.0, 0.0], dtype=F64)  # 40 A apart, cutoff 3 A, 2 layers
    together = m(numbers, far)
    alone_a, alone_b = m(numbers[a], pos[a]), m(numbers[b], pos[b])
    torch.testing.assert_close(together["energy"], alone_a["energy"] + alone_b["energy"], atol=1e-12, rtol=0)
    torch.testing.assert_close(together["forces"], torch.cat([alone_a["forces"], alone_b["forces"]]), atol=1e-12, rtol=0)
    # negative control: brought within the cutoff, the two interact
    near = pos.clone()
    near[b] += torch.tensor([1.5, 0.0, 0.0], dtype=F64)
    assert (m.energy(numbers, near) - alone_a["energy"] - alone_b["energy"]).abs() > 1e-3


def test_no_gradient_crosses_structures_in_a_batch():
    m = model()
    numbers, pos, batch = molecules()
    pos[batch == 1] += 0.3  # overlapping in space: only the batch vector separates them
    out = m(numbers, pos, batch=batch)
    for g in (0, 1):
        sel = batch == g
        alone = m(numbers[sel], pos[sel])
        torch.testing.assert_close(out["energy"][g:g + 1], alone["energy"], atol=1e-12, rtol=0)
        torch.testing.assert_close(out["forces"][sel], alone["forces"], atol=1e-12, rtol=0)
    p = pos.clone().requires_grad_(True)
    energy = m.energy(numbers, p, batch=batch)
    (g0,) = torch.autograd.grad(energy[0], p, retain_graph=True)
    (g1,) = torch.autograd.grad(energy[1], p)
    assert torch.equal(g0[batch == 1], torch.zeros_like(g0[batch == 1]))
    assert torch.equal(g1[batch == 0], torch.zeros_like(g1[batch == 0]))
    assert g0[batch == 0].abs().max() > 1e-3 and g1[batch == 1].abs().max() > 1e-3
    # negative control: as ONE structure, the overlapping molecules do feel each other
    assert (m.energy(numbers, pos) - out["energy"].sum()).abs() > 1e-3


def _scan(m, r):
    """An H atom at distance r from the O of a C-O pair (r along x)."""
    numbers = torch.tensor([8, 1, 6])
    pos = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0], [0.0, 1.1, 0.0]], dtype=F64)  # a C bonded to O
    return numbers, pos


def derivative_across_cutoff(m, delta):
    """dE/dx of the H atom whose distance to O crosses the cutoff, just inside and just outside."""
    return [float(m(*_scan(m, r))["forces"][1, 0]) for r in (m.cutoff - delta, m.cutoff + delta)]


def fd_derivative_across_cutoff(m, delta):
    """One-sided finite differences of E at r_c: (E(r_c) - E(r_c - delta)) / delta and (E(r_c + delta) - E(r_c)) / delta."""
    with torch.no_grad():
        e = [float(m.energy(*_scan(m, r))) for r in (m.cutoff - delta, m.cutoff, m.cutoff + delta)]
    return (e[1] - e[0]) / delta, (e[2] - e[1]) / delta


def test_smooth_first_derivative_across_cutoff():
    m = model()
    # energy along the scan, through the cutoff: finite differences of E agree with the forces
    # on both sides, and the force goes to zero at r_c (like (r_c - r)^2 for the p=6 envelope)
    jumps = {}
    for delta in (1e-2, 1e-3):
        inside, outside = derivative_across_cutoff(m, delta)
        assert outside == 0.0  # beyond the cutoff the H atom is alone
        jumps[delta] = abs(inside - outside)
    print("force jump across the cutoff:", jumps)
    # measured 5.8e-9 (delta = 1e-3) and 5.8e-6 (1e-2): the force vanishes like (r_c - r)^3 (envelope
    # u ~ (1 - r/r_c)^3 times Bessel functions that vanish at r_c)
    assert jumps[1e-3] < 6e-7 and jumps[1e-2] > 0
    assert jumps[1e-3] < jumps[1e-2] / 50  # at least quadratic decay (100x for a 10x smaller delta)
    # the energy itself, scanned through r_c: the finite-difference slopes on both sides agree
    left, right = fd_derivative_across_cutoff(m, 1e-3)
    print(f"finite-difference slopes at r_c: {left:.2e} (inside), {right:.2e} (outside)")
    assert right == 0.0 and abs(left) < 1.5e-7  # measured 1.5e-9
    # far from the cutoff the H atom does feel the O atom
    numbers = torch.tensor([8, 1, 6])
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.1, 0.0]], dtype=F64)
    assert m(numbers, pos)["forces"][1].abs().max() > 1e-2


def test_hard_cutoff_negative_control():
    """With the smooth envelope replaced by a step, the force jumps at the cutoff."""
    m = model()
    rc = m.cutoff

    class Step(torch.nn.Module):
        def forward(self, r):
            return (r < rc).to(r.dtype)

    m.convs[0].envelope = Step()  # the envelope node_energies uses
    inside, outside = derivative_across_cutoff(m, 1e-6)
    left, right = fd_derivative_across_cutoff(m, 1e-3)
    print(f"hard cutoff: force {inside:.3e} inside vs {outside:.1e} outside; FD slopes {left:.2e}, {right:.2e}")
    assert abs(inside - outside) > 1e-3 and abs(left - right) > 1e-3


def test_supercell_energy_ratio_and_forces():
    m = model()
    numbers, pos, cell = crystal(n=4, L=4.0)  # edges longer than the cutoff, atoms near the faces
    out = m(numbers, pos, cell, compute_stress=True)
    reps = [(i, j, 0) for i in range(2) for j in range(2)]
    shift = torch.tensor(reps, dtype=F64) @ cell  # [4, 3]
    big_pos = (pos[None] + shift[:, None]).reshape(-1, 3)
    big_numbers = numbers.repeat(4)
    big_cell = cell * torch.tensor([[2.0], [2.0], [1.0]], dtype=F64)
    big = m(big_numbers, big_pos, big_cell, compute_stress=True)
    torch.testing.assert_close(big["energy"], 4 * out["energy"], atol=1e-11, rtol=0)
    torch.testing.assert_close(big["forces"], out["forces"].repeat(4, 1), atol=1e-11, rtol=0)
    torch.testing.assert_close(big["stress"], out["stress"], atol=1e-12, rtol=0)
    # negative control: the supercell without periodicity along z is another structure
    open_z = m.energy(big_numbers, big_pos, big_cell, torch.tensor([[True, True, False]]))
    assert (open_z - 4 * out["energy"]).abs() > 1e-3


def test_single_atom_and_mixed_batch():
    m = model()
    out = m(torch.tensor([8]), torch.zeros(1, 3, dtype=F64))
    assert out["forces"].abs().max() == 0
    # a molecule and a crystal in one batch: the molecule's cell row is unused (pbc False)
    numbers, pos, cell = crystal(n=4, small=False)
    mz, mpos, _ = molecules()
    both_numbers = torch.cat([numbers, mz[:7]])
    both_pos = torch.cat([pos, mpos[:7]])
    batch = torch.tensor([0] * 4 + [1] * 7)
    cells = torch.stack([cell, torch.zeros(3, 3, dtype=F64)])  # collate's zero cell for a molecule
    pbc = torch.tensor([[True] * 3, [False] * 3])
    out = m(both_numbers, both_pos, cells, pbc, batch, compute_stress=True)
    crystal_alone = m(numbers, pos, cell, compute_stress=True)
    torch.testing.assert_close(out["energy"][0], crystal_alone["energy"][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(out["energy"][1], m.energy(mz[:7], mpos[:7])[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(out["forces"][:4], crystal_alone["forces"], atol=1e-12, rtol=0)
    # stress: the crystal's as alone, NaN for the molecule (no periodic cell, no stress)
    torch.testing.assert_close(out["stress"][0], crystal_alone["stress"][0], atol=1e-12, rtol=0)
    assert out["stress"][1].isnan().all()


# ----------------------------------------------------------------------------
# Scale and shift, training, dtypes
# ----------------------------------------------------------------------------
def test_fit_scale_shift_recovers_reference_energies():
    m = model()
    numbers, _, batch = molecules()
    mu = {1: -13.6, 6: -1030.0, 8: -2040.0}
    energy = torch.stack([sum(torch.tensor(mu[int(z)], dtype=F64) for z in numbers[batch == g]) for g in (0, 1)])
    # two structures and three species: underdetermined; add a third, H2
    numbers3 = torch.cat([numbers, torch.tensor([1, 1])])
    batch3 = torch.cat([batch, torch.tensor([2, 2])])
    energy3 = torch.cat([energy, torch.tensor([2 * mu[1]], dtype=F64)])
    forces = torch.randn(14, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 0.5
    forces[3] = float("nan")  # a missing label is ignored
    atomic, scale = m.fit_scale_shift(numbers3, batch3, energy3, forces)
    torch.testing.assert_close(atomic, torch.tensor([mu[1], mu[6], mu[8]], dtype=F64), atol=1e-9, rtol=0)
    f = forces[~torch.isnan(forces).any(1)]
    assert abs(float(scale) - float(f.square().mean().sqrt())) < 1e-12
    assert torch.equal(m.atomic_energies, atomic) and float(m.scale) == float(scale)
    # the fitted shifts enter the energy: an isolated atom gets mu_Z + scale * readout
    e_o = m.energy(torch.tensor([8]), torch.zeros(1, 3, dtype=F64))
    assert abs(float(e_o.detach()) - mu[8]) < 10 * float(scale)


def test_training_mode_forces_backpropagate():
    m = model()
    numbers, pos, batch = molecules()
    m.train()
    out = m(numbers, pos, batch=batch)
    loss = out["forces"].square().mean() + out["energy"].square().mean()
    loss.backward()
    radial = m.convs[0].radial.weights[0].grad
    assert radial is not None and radial.abs().max() > 0
    # in eval mode the forces carry no graph to the weights (cheap inference)
    m.eval()
    assert not m(numbers, pos, batch=batch)["forces"].requires_grad
    assert m(numbers, pos, batch=batch, create_graph=True)["forces"].requires_grad


def test_float32_matches_float64():
    m = model()
    numbers, pos, batch = molecules()
    ref = m(numbers, pos, batch=batch)
    m32 = m.float()
    out = m32(numbers, pos.float(), batch=batch)
    assert out["energy"].dtype == torch.float32
    torch.testing.assert_close(out["forces"].double(), ref["forces"], atol=1e-4, rtol=1e-4)


def test_bad_inputs():
    m = model()
    numbers, pos, batch = molecules()
    with pytest.raises(ValueError, match="atomic number 7, which is not among the model's species"):
        m(torch.tensor([6, 7, 1, 8, 1, 6, 1, 8, 1, 1, 6, 1]), pos, batch=batch)
    with pytest.raises(ValueError, match="atomic number 200"):
        m(torch.full((12,), 200), pos, batch=batch)
    with pytest.raises(ValueError, match=r"numbers must have shape \[N\] = \[12\]"):
        m(numbers[:-1], pos, batch=batch)
    with pytest.raises(TypeError, match="numbers must be an integer tensor"):
        m(numbers.double(), pos, batch=batch)
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\]"):
        m(numbers, pos[:, :2], batch=batch)
    with pytest.raises(TypeError, match="pos is torch.float32 .* parameters are torch.float64"):
        m(numbers, pos.float(), batch=batch)
    with pytest.raises(ValueError, match=r"batch must have shape \[N\] = \[12\]"):
        m(numbers, pos, batch=batch[:-1])
    with pytest.raises(ValueError, match=r"cell must have shape \[G, 3, 3\]"):
        m(numbers, pos, torch.eye(4, dtype=F64)[None], batch=batch)
    with pytest.raises(TypeError, match="cell must have pos's dtype"):
        m(numbers, pos, torch.eye(3)[None].expand(2, 3, 3), batch=batch)
    with pytest.raises(ValueError, match="cell has only G = 1 cells"):
        m(numbers, pos, 10 * torch.eye(3, dtype=F64), batch=batch)
    with pytest.raises(ValueError, match=r"pbc must have shape \[G, 3\] = \[1, 3\]"):
        m(numbers[:7], pos[:7], 10 * torch.eye(3, dtype=F64), torch.tensor([True, True]))
    with pytest.raises(ValueError, match="compute_stress=True needs a periodic cell"):
        m(numbers, pos, batch=batch, compute_stress=True)
    with pytest.raises(ValueError, match="pbc is True along some axis but no cell"):
        m(numbers[:7], pos[:7], None, torch.tensor([[True, False, False]]))
    with pytest.raises(ValueError, match="species must be a non-empty list of distinct atomic numbers"):
        InteratomicPotential([1, 1])
    with pytest.raises(ValueError, match="irreps_hidden must start with scalars 0e"):
        InteratomicPotential([1], irreps_hidden="4x1o+8x0e")
    with pytest.raises(ValueError, match="cutoff must be a positive finite number"):
        InteratomicPotential([1], cutoff=-1.0)
    with pytest.raises(ValueError, match=r"atomic_energies must have one entry per species \(2\)"):
        InteratomicPotential([1, 8], atomic_energies=[0.0])
    with pytest.raises(ValueError, match="energy must have shape"):
        m.fit_scale_shift(numbers, batch, torch.zeros(2, 1))


def test_node_energies_compile_to_one_graph():
    torch._dynamo.reset()
    m = model(num_layers=1, lmax=1, irreps_hidden="4x0e+2x1o")
    numbers, pos, batch = molecules()
    from minequi.neighbor_list import batched_neighbor_list

    edge_index, shifts = batched_neighbor_list(pos, m.cutoff, None, None, batch)
    index = m.species_index(numbers)
    vec = (pos[edge_index[0]] - pos[edge_index[1]]).requires_grad_(True)
    compiled = torch.compile(m.node_energies, fullgraph=True, backend="eager")
    e, ec = m.node_energies(index, edge_index, vec), compiled(index, edge_index, vec)
    torch.testing.assert_close(ec, e, atol=1e-13, rtol=0)
    (g,) = torch.autograd.grad(e.sum(), vec)
    (gc,) = torch.autograd.grad(ec.sum(), vec)
    torch.testing.assert_close(gc, g, atol=1e-13, rtol=0)
    assert math.isfinite(float(e.detach().sum()))


def test_species_and_pbc_must_have_the_right_types():
    # (found by the bad-input audit: [1.5] was truncated to [1]; integer pbc read as True)
    for bad in ([1.5], ["H"], [True], "CuO"):
        with pytest.raises(TypeError, match="species must be a list of integer atomic numbers"):
            InteratomicPotential(bad)
    m = InteratomicPotential([29], num_layers=1).double()
    pos = torch.rand(4, 3, dtype=torch.float64) * 3
    cell = 3.6 * torch.eye(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="pbc must hold booleans"):
        m(torch.full((4,), 29), pos, cell, pbc=torch.tensor([2, 1, 1]))
    out = m(torch.full((4,), 29), pos, cell, pbc=[True, True, True])  # booleans: accepted
    assert out["energy"].shape == (1,)
