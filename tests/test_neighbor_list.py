"""neighbor_list / batched_neighbor_list against a brute-force search over images and against ASE."""
import math

import numpy as np
import pytest
import torch

from minequi.neighbor_list import batched_neighbor_list, neighbor_list


# ----------------------------------------------------------------------------
# Reference: brute force over all pairs and all images in a box of shifts
# ----------------------------------------------------------------------------
def brute_force(pos, cutoff, cell, pbc, self_interaction=False):
    """Set of (j, i, S) with |pos[j] - pos[i] + S @ cell| < cutoff, all pairs x all shifts (numpy, float64)."""
    pos = np.asarray(pos, dtype=np.float64)
    N = len(pos)
    if N == 0:
        return set()
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if cell is None or not pbc.any():
        cell = np.zeros((3, 3))
        frac = np.zeros((N, 3))
        m = [0, 0, 0]
    else:
        cell = np.asarray(cell, dtype=np.float64)
        # complete non-periodic rows so the cell is invertible; their shift is always 0
        full = cell.copy()
        for a in range(3):
            if not pbc[a]:
                full[a] = 0.0
        u, s, vh = np.linalg.svd(full[pbc])
        full[~pbc] = vh[pbc.sum():]
        inv = np.linalg.inv(full)
        frac = pos @ inv
        d = 1.0 / np.linalg.norm(inv, axis=0)
        m = [int(math.ceil(cutoff / d[a] + 0.5)) if pbc[a] else 0 for a in range(3)]
    T = np.stack(np.meshgrid(*[np.arange(-ma, ma + 1) for ma in m], indexing="ij"), -1).reshape(-1, 3)
    out = set()
    for i in range(N):
        for j in range(N):
            centre = np.where(pbc, np.round(frac[i] - frac[j]), 0.0)
            S = centre + T  # [T, 3]
            vec = pos[j] - pos[i] + S @ cell
            ok = (vec ** 2).sum(-1) < cutoff ** 2
            for s in S[ok]:
                if i == j and not s.any() and not self_interaction:
                    continue
                out.add((j, i, tuple(int(x) for x in s)))
    return out


def as_set(edge_index, shifts):
    ei = edge_index.tolist()
    S = shifts.round().long().tolist()
    assert torch.equal(shifts, shifts.round()), "shifts must hold integer values"
    return {(j, i, tuple(s)) for j, i, s in zip(ei[0], ei[1], S)}


def random_cell(gen, scale, tilt=0.4):
    """A random triclinic cell: scale * (I + tilt * Gaussian), rows = lattice vectors."""
    return scale * (torch.eye(3, dtype=torch.float64) + tilt * torch.randn(3, 3, generator=gen, dtype=torch.float64))


def random_system(gen, n, scale, outside=0.0):
    cell = random_cell(gen, scale)
    frac = torch.rand(n, 3, generator=gen, dtype=torch.float64) * (1 + 2 * outside) - outside
    return frac @ cell, cell


def test_comparison_helper_negative_control():
    """The set comparison detects a missing edge, a wrong shift and a wrong direction."""
    gen = torch.Generator().manual_seed(0)
    pos, cell = random_system(gen, 6, 3.0)
    ei, S = neighbor_list(pos, 2.5, cell, pbc=True)
    ref = brute_force(pos.numpy(), 2.5, cell.numpy(), True)
    assert as_set(ei, S) == ref and len(ref) > 10
    assert as_set(ei[:, 1:], S[1:]) != ref  # one edge dropped
    S2 = S.clone()
    S2[0, 0] += 1
    assert as_set(ei, S2) != ref  # one shift wrong
    assert as_set(ei.flip(0), S) != ref  # (i, j) swapped with the same shifts: wrong vectors
    # brute force itself: a cutoff slightly smaller removes edges
    assert brute_force(pos.numpy(), 2.4, cell.numpy(), True) != ref


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False, True, False), (False, False, False)])
def test_random_triclinic_matches_brute_force(seed, pbc):
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 12, (1,), generator=gen))
    scale = [1.2, 2.0, 3.5, 6.0, 2.5, 4.0][seed]  # cells smaller and larger than the cutoff
    pos, cell = random_system(gen, n, scale, outside=0.5 if seed % 2 else 0.0)
    cutoff = 3.0
    ei, S = neighbor_list(pos, cutoff, cell, pbc=pbc)
    ref = brute_force(pos.numpy(), cutoff, cell.numpy(), pbc)
    assert as_set(ei, S) == ref
    assert ei.shape[1] == len(ref)  # no duplicates
    # the edge vectors are all shorter than the cutoff, and both directions are present
    vec = pos[ei[0]] - pos[ei[1]] + S @ cell
    assert bool((vec.norm(dim=-1) < cutoff).all())


def test_sorted_deterministic_and_edge_vectors():
    gen = torch.Generator().manual_seed(3)
    pos, cell = random_system(gen, 20, 4.0, outside=1.0)
    ei, S = neighbor_list(pos, 3.0, cell, pbc=True)
    i, j = ei[1], ei[0]
    key = list(zip(i.tolist(), j.tolist(), S.long().tolist()))
    assert key == sorted(key)
    perm = torch.randperm(20, generator=gen)
    ei2, S2 = neighbor_list(pos[perm], 3.0, cell, pbc=True)
    # a permutation of the atoms relabels the edges
    assert as_set(perm[ei2], S2) == as_set(ei, S)


def test_small_cell_many_images():
    """A 1 A cubic cell with cutoff 2.5: every atom sees dozens of images of itself."""
    cell = torch.eye(3, dtype=torch.float64)
    pos = torch.tensor([[0.1, 0.2, 0.3], [0.6, 0.5, 0.4]], dtype=torch.float64)
    ei, S = neighbor_list(pos, 2.5, cell, pbc=True)
    ref = brute_force(pos.numpy(), 2.5, cell.numpy(), True)
    assert as_set(ei, S) == ref
    self_images = int(((ei[0] == 0) & (ei[1] == 0)).sum())
    # integer points strictly inside a sphere of radius 2.5 minus the origin
    r = np.arange(-3, 4)
    g = np.stack(np.meshgrid(r, r, r), -1).reshape(-1, 3)
    assert self_images == int(((g ** 2).sum(-1) < 6.25).sum()) - 1


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_systems(n):
    cell = torch.eye(3, dtype=torch.float64) * 2.0
    pos = torch.full((n, 3), 0.3, dtype=torch.float64)
    ei, S = neighbor_list(pos, 2.1, cell, pbc=True)
    assert as_set(ei, S) == brute_force(pos.numpy(), 2.1, cell.numpy(), True)
    assert ei.shape == (2, 6 * n) and ei.dtype == torch.int64 and S.shape == (6 * n, 3)
    ei, S = neighbor_list(pos, 2.1)
    assert ei.shape == (2, 0) and S.shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_pos(dtype):
    gen = torch.Generator().manual_seed(1)
    pos, cell = random_system(gen, 8, 3.0)
    pos, cell = pos.to(dtype), cell.to(dtype)
    ei, S = neighbor_list(pos, 2.7, cell, pbc=True)
    assert S.dtype == dtype and ei.dtype == torch.int64
    assert as_set(ei, S) == brute_force(pos.double().numpy(), 2.7, cell.double().numpy(), True)


def test_self_interaction():
    pos = torch.tensor([[0.0, 0, 0], [5.0, 0, 0]])
    ei, S = neighbor_list(pos, 1.0, self_interaction=True)
    assert ei.tolist() == [[0, 1], [0, 1]] and not S.any()


def test_free_space_matches_radius_graph():
    from minequi.graph import radius_graph

    gen = torch.Generator().manual_seed(2)
    pos = torch.randn(200, 3, generator=gen) * 3
    ei, S = neighbor_list(pos, 1.5)
    assert torch.equal(ei, radius_graph(pos, 1.5)) and not S.any()
    # a cell given with pbc all False is free space too
    ei2, S2 = neighbor_list(pos, 1.5, torch.eye(3), pbc=False)
    assert torch.equal(ei2, ei)


def test_slab_with_zero_vector():
    """pbc along x, y only: the third row of the cell may be zero (ASE allows it)."""
    gen = torch.Generator().manual_seed(4)
    cell = random_cell(gen, 3.0)
    cell[2] = 0.0
    pos = torch.rand(7, 3, generator=gen, dtype=torch.float64) * 4
    ei, S = neighbor_list(pos, 2.8, cell, pbc=(True, True, False))
    assert as_set(ei, S) == brute_force(pos.numpy(), 2.8, cell.numpy(), (True, True, False))
    assert not S[:, 2].any()


def test_matches_ase():
    ase = pytest.importorskip("ase")
    from ase.build import bulk
    from ase.neighborlist import neighbor_list as ase_nl

    gen = torch.Generator().manual_seed(5)
    for trial in range(4):
        cell = random_cell(gen, [2.0, 4.0, 7.0, 3.0][trial]).numpy()
        n = 9
        frac = np.random.default_rng(trial).uniform(-0.3, 1.3, size=(n, 3))
        pbc = [(True, True, True), (True, False, True), (True, True, True), (False, True, True)][trial]
        atoms = ase.Atoms("Cu" * n, scaled_positions=frac, cell=cell, pbc=pbc)
        atoms.positions = frac @ cell  # keep the atoms outside the cell
        i, j, S = ase_nl("ijS", atoms, 3.3)
        # ASE: vector = pos[j] - pos[i] + S @ cell, i.e. our edge (j -> i) with the same S
        ref = {(int(b), int(a), tuple(int(x) for x in s)) for a, b, s in zip(i, j, S)}
        ei, sh = neighbor_list(torch.tensor(atoms.positions), 3.3, torch.tensor(cell), pbc=pbc)
        assert as_set(ei, sh) == ref and len(ref) > 0
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=0)
    i, j, S = ase_nl("ijS", atoms, 5.0)
    ref = {(int(b), int(a), tuple(int(x) for x in s)) for a, b, s in zip(i, j, S)}
    ei, sh = neighbor_list(torch.tensor(atoms.positions), 5.0, torch.tensor(atoms.cell[:]), pbc=True)
    assert as_set(ei, sh) == ref and len(ref) > 108 * 40  # 42 neighbours per atom (12 + 6 + 24 shells) before rattling


def test_batched_equals_per_structure():
    gen = torch.Generator().manual_seed(6)
    systems = [random_system(gen, n, s, outside=0.3) for n, s in [(5, 2.0), (0, 3.0), (9, 4.0), (3, 1.5)]]
    pbcs = torch.tensor([[True, True, True], [True, True, True], [True, False, True], [False, False, False]])
    pos = torch.cat([p for p, _ in systems])
    cell = torch.stack([c for _, c in systems])
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor([len(p) for p, _ in systems]))
    # shuffle the atoms: batch need not be sorted
    perm = torch.randperm(len(pos), generator=gen)
    ei, S = batched_neighbor_list(pos[perm], 2.6, cell, pbcs, batch[perm])
    got = as_set(perm[ei], S)
    ref, offset = set(), 0
    for g, (p, c) in enumerate(systems):
        e, s = neighbor_list(p, 2.6, c, pbc=pbcs[g].tolist())
        ref |= as_set(e + offset, s)
        offset += len(p)
    assert got == ref and len(ref) > 0
    bi = batch[perm]
    assert torch.equal(bi[ei[0]], bi[ei[1]])  # no edge across structures
    vec = pos[perm][ei[0]] - pos[perm][ei[1]] + torch.einsum("ea,eab->eb", S, cell[bi[ei[1]]])
    assert bool((vec.norm(dim=-1) < 2.6).all())
    # free space, no cell
    ei, S = batched_neighbor_list(pos, 2.6, None, None, batch)
    assert not S.any() and torch.equal(batch[ei[0]], batch[ei[1]])


def test_bad_inputs():
    pos = torch.zeros(4, 3)
    cell = torch.eye(3)
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\]"):
        neighbor_list(torch.zeros(4, 2), 1.0)
    with pytest.raises(TypeError, match="pos must be a floating-point"):
        neighbor_list(torch.zeros(4, 3, dtype=torch.int64), 1.0)
    with pytest.raises(TypeError, match="pos must be a torch.Tensor"):
        neighbor_list(np.zeros((4, 3)), 1.0)
    with pytest.raises(ValueError, match="pos must be finite"):
        neighbor_list(torch.full((2, 3), float("nan")), 1.0)
    for bad in [0.0, -1.0, float("inf"), float("nan")]:
        with pytest.raises(ValueError, match="cutoff must be a positive finite number"):
            neighbor_list(pos, bad, cell, pbc=True)
    with pytest.raises(TypeError, match="cutoff"):
        neighbor_list(pos, "1.0")
    with pytest.raises(ValueError, match=r"cell must have shape \[3, 3\]"):
        neighbor_list(pos, 1.0, torch.eye(2), pbc=True)
    with pytest.raises(TypeError, match="cell must be a floating-point"):
        neighbor_list(pos, 1.0, torch.eye(3, dtype=torch.int64), pbc=True)
    with pytest.raises(ValueError, match="cell is singular"):
        neighbor_list(pos, 1.0, torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1]]), pbc=True)
    with pytest.raises(ValueError, match=r"pbc\[2\] is True but cell\[2\]"):
        neighbor_list(pos, 1.0, torch.diag(torch.tensor([1.0, 1.0, 0.0])), pbc=True)
    with pytest.raises(ValueError, match="cell must be finite"):
        neighbor_list(pos, 1.0, torch.full((3, 3), float("nan")), pbc=True)
    with pytest.raises(ValueError, match="needs a cell"):
        neighbor_list(pos, 1.0, None, pbc=True)
    with pytest.raises(ValueError, match=r"pbc must have shape \[3\]"):
        neighbor_list(pos, 1.0, cell, pbc=(True, True))
    with pytest.raises(TypeError, match="pbc must be a bool"):
        neighbor_list(pos, 1.0, cell, pbc=(0.5, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"cell must have shape \[G, 3, 3\]"):
        batched_neighbor_list(pos, 1.0, cell, None, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch has index 1"):
        batched_neighbor_list(pos, 1.0, cell[None], None, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"batch must have shape \[N\]"):
        batched_neighbor_list(pos, 1.0, cell[None], None, torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"pbc must have shape \[1, 3\]"):
        batched_neighbor_list(pos, 1.0, cell[None], torch.ones(2, dtype=torch.bool), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"pbc\[1, 2\] is True but cell\[1, 2\]"):
        batched_neighbor_list(pos, 1.0, torch.stack([cell, torch.diag(torch.tensor([1.0, 1, 0]))]), None,
                              torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"cell\[1\] is singular"):
        batched_neighbor_list(pos, 1.0, torch.stack([cell, torch.ones(3, 3)]), None, torch.tensor([0, 0, 1, 1]))


def test_large_sparse_free_space_memory_bounded():
    """Two atoms 1e6 A apart: the bin count is capped, nothing blows up."""
    pos = torch.tensor([[0.0, 0, 0], [1e6, 1e6, 1e6], [0.5, 0, 0]], dtype=torch.float64)
    ei, S = neighbor_list(pos, 1.0)
    assert ei.tolist() == [[2, 0], [0, 2]]


def test_atoms_on_cell_faces_and_corners():
    """Fractional coordinates 0, 1, -1e-17, 1 - 1e-17 (rounding at the wrap) and exact lattice points."""
    gen = torch.Generator().manual_seed(7)
    cell = random_cell(gen, 3.0, tilt=0.2)
    frac = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1e-17, 0.5, 1.0], [1 - 1e-17, 0.0, 0.25],
                         [0.5, -1e-300, 2.0], [-1.0, 0.5, 0.5]], dtype=torch.float64)
    pos = frac @ cell
    for pbc in [(True, True, True), (True, False, True)]:
        ei, S = neighbor_list(pos, 3.2, cell, pbc=pbc)
        assert as_set(ei, S) == brute_force(pos.numpy(), 3.2, cell.numpy(), pbc)


def test_many_structures_batched_equals_per_structure():
    gen = torch.Generator().manual_seed(8)
    pos, cells, pbcs, batch, ref, offset = [], [], [], [], set(), 0
    for g in range(12):
        n = int(torch.randint(0, 7, (1,), generator=gen))
        p, c = random_system(gen, n, float(torch.rand(1, generator=gen)) * 4 + 1.5, outside=0.2)
        pb = (torch.rand(3, generator=gen) < 0.7).tolist()
        e, s = neighbor_list(p, 2.9, c, pbc=pb)
        ref |= as_set(e + offset, s)
        pos.append(p)
        cells.append(c)
        pbcs.append(pb)
        batch += [g] * n
        offset += n
    ei, S = batched_neighbor_list(torch.cat(pos), 2.9, torch.stack(cells), torch.tensor(pbcs), torch.tensor(batch))
    assert as_set(ei, S) == ref and len(ref) > 50
    key = list(zip(ei[1].tolist(), ei[0].tolist(), S.long().tolist()))
    assert key == sorted(key)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_free_space_path_equals_cell_list(monkeypatch, dtype):
    """Free space with few atoms takes the all-pairs path: same edges, same order, as the cell list,
    including pairs within one rounding of the cutoff, batches with shuffled atoms and self edges."""
    import importlib

    nl = importlib.import_module("minequi.neighbor_list")  # the module (the package exports the function)
    gen = torch.Generator().manual_seed(11)
    cutoff = 1.7
    pos = (torch.randn(60, 3, generator=gen, dtype=torch.float64) * 1.5)
    d = torch.randn(3, dtype=torch.float64, generator=gen)
    d = d / d.norm()
    for k, eps in enumerate([-1e-15, 0.0, 1e-15, -1e-7, 1e-7]):  # pairs at the cutoff, to rounding
        pos[2 * k + 1] = pos[2 * k] + (cutoff + eps) * d
    pos = pos.to(dtype)
    batch = torch.randint(0, 4, (60,), generator=gen)
    calls = [lambda: nl.neighbor_list(pos, cutoff), lambda: nl.neighbor_list(pos, cutoff, self_interaction=True),
             lambda: nl.neighbor_list(pos, cutoff, torch.eye(3, dtype=dtype) * 2, pbc=False),
             lambda: nl.batched_neighbor_list(pos, cutoff, None, None, batch)]
    dense = [f() for f in calls]
    monkeypatch.setattr(nl, "DENSE_MAX_ATOMS", 0)  # the cell list
    cell_list = [f() for f in calls]
    for (e1, s1), (e2, s2) in zip(dense, cell_list):
        assert torch.equal(e1, e2) and torch.equal(s1, s2) and s1.dtype == dtype
    assert dense[0][0].shape[1] > 100
    assert dense[1][0].shape[1] == dense[0][0].shape[1] + 60
    # negative control: a filter one part in 1e9 wider finds other edges (the float64 pairs 1e-15 beyond)
    monkeypatch.setattr(nl, "DENSE_MAX_ATOMS", 256)
    wider = nl.neighbor_list(pos, cutoff * (1 + 1e-9))[0]
    if dtype == torch.float64:
        assert wider.shape[1] > dense[0][0].shape[1]
