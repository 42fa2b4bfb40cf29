r"""Neighbour lists with periodic boundary conditions: ``edge_index`` plus integer cell shifts.

A crystal is a finite set of atoms ``pos [N, 3]`` in a *cell* whose rows
``a_1, a_2, a_3`` are the lattice vectors (ASE's convention), repeated along
every periodic axis.  Atom ``j`` then has images at
``pos[j] + S @ cell`` for all integer vectors ``S`` (``S_a = 0`` along a
non-periodic axis).  A neighbour list is the set of all directed edges
``(j, S) -> i`` with

.. math:: r_{ij}(S) = x_j - x_i + S\,C, \qquad |r_{ij}(S)| < r_c,

stored in the point-cloud chapter's convention (:mod:`minequi.graph`) as
``edge_index [2, E]`` (row 0 = source ``j``, row 1 = target ``i``) plus
``shifts [E, 3]``, the integer ``S`` of each edge (stored in ``pos.dtype`` so
that ``shifts @ cell`` needs no cast).  Both directions of every pair are listed
(if ``(j, S) -> i`` is an edge then so is ``(i, -S) -> j``), and when the cell is
smaller than the cutoff the same atom appears several times with different
shifts -- an atom may even be its own neighbour, ``(i, S) -> i`` with ``S != 0``.
Only the zero-length self edge ``(i, 0) -> i`` is left out (unless
``self_interaction=True``).

The list is a discrete, non-differentiable object.  A model recomputes the edge
vectors differentiably from it,
``edge_vec = pos[j] - pos[i] + shifts @ cell``, which is what makes forces
(``-dE/dpos``) and stress (a derivative with respect to a strain of ``pos`` and
``cell``) flow through the periodic images (:mod:`minequi.forces`).

Algorithm (a cell list in fractional coordinates, vectorised in torch)
----------------------------------------------------------------------
1. *Internal cell.*  Rows of non-periodic axes are replaced by an orthonormal
   basis of the complement of the periodic rows (so a slab may have a zero or
   arbitrary third vector, and free space is the identity cell); shifts along
   those axes are always zero, so this changes the binning, never the result.
2. *Wrap.*  Fractional coordinates ``f = pos C^{-1}``; along periodic axes
   ``n_0 = floor(f)`` and ``f - n_0`` lies in ``[0, 1)``.  An edge found between
   wrapped atoms with shift ``S_w`` is the edge ``S = S_w - n_0[j] + n_0[i]``
   of the given positions, so atoms outside the cell are fine.
3. *Bins.*  The distance between the lattice planes of axis ``a`` is
   ``d_a = 1 / |C^{-1}[:, a]|`` (the fractional coordinate ``f_a`` changes by
   ``1/d_a`` per Angstrom), so a sphere of radius ``r_c`` spans
   ``+-r_c / d_a`` in ``f_a``.  A periodic axis is cut into
   ``n_a = max(1, floor(d_a / r_c))`` bins and a target bin looks
   ``k_a = ceil(r_c n_a / d_a)`` bins each way (``k_a = 1`` for large cells,
   ``k_a > 1`` when the cell is thinner than the cutoff: those are the extra
   images); neighbour bin ``b + o`` is bin ``(b + o) mod n_a`` with shift
   ``floor((b + o) / n_a)``.  A non-periodic axis gets bins of width ``r_c``
   over the extent of the atoms and ``k_a = 1``.
4. *Candidates.*  Atoms are sorted by bin key; for every atom and every one of
   the ``prod(2 k_a + 1)`` bin offsets, ``searchsorted`` gives the range of
   atoms of that bin, which is expanded into candidate pairs and filtered by
   ``|r_ij(S)| < r_c`` (strict).

Cost ``O(N prod(2k_a+1) + P)`` time and memory, ``P`` the number of candidates
(about ``27 / (4 pi / 3) ~ 6.4`` times the number of edges at uniform density
and ``k_a = 1``): linear in ``N`` at fixed density, no ``N x N`` matrix.
Geometry is done in float64 on a detached copy; the edges are sorted by
``(i, j, S)`` so the output is deterministic.  The output size is
data-dependent and a few numbers are read back to the host, so build the list
outside ``torch.compile``-d code.

>>> import torch
>>> cell = torch.eye(3, dtype=torch.float64)             # a 1 A simple cubic lattice
>>> pos = torch.zeros(1, 3, dtype=torch.float64)         # one atom
>>> edge_index, shifts = neighbor_list(pos, 1.1, cell, pbc=True)
>>> edge_index                                           # six images of atom 0 around atom 0
tensor([[0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0]])
>>> shifts
tensor([[-1.,  0.,  0.],
        [ 0., -1.,  0.],
        [ 0.,  0., -1.],
        [ 0.,  0.,  1.],
        [ 0.,  1.,  0.],
        [ 1.,  0.,  0.]], dtype=torch.float64)
>>> j, i = edge_index
>>> (pos[j] - pos[i] + shifts @ cell).norm(dim=-1)      # all at distance 1
tensor([1., 1., 1., 1., 1., 1.], dtype=torch.float64)
"""
from __future__ import annotations

import math

import torch

from .graph import check_batch, check_pos

__all__ = ["neighbor_list", "batched_neighbor_list"]


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------
def _check_cutoff(cutoff) -> float:
    if isinstance(cutoff, torch.Tensor) and cutoff.numel() == 1 and not cutoff.dtype == torch.bool:
        cutoff = float(cutoff)
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)):
        raise TypeError(f"cutoff must be a positive finite number, got {type(cutoff).__name__}")
    if not (0 < cutoff < math.inf):
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff!r}")
    return float(cutoff)


def _check_pbc(pbc, shape: tuple, name: str = "pbc") -> torch.Tensor:
    """``pbc`` as a bool tensor of ``shape`` (a bool broadcasts); CPU."""
    if isinstance(pbc, bool):
        return torch.full(shape, pbc, dtype=torch.bool)
    try:
        t = torch.as_tensor(pbc).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a bool or booleans of shape {list(shape)}, got {pbc!r}") from None
    if t.dtype != torch.bool:
        if t.is_floating_point() or t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
            raise TypeError(f"{name} must be a bool or booleans of shape {list(shape)}, got {pbc!r}")
        t = t.bool()
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)} (one flag per lattice vector), got {list(t.shape)}")
    return t


def _check_cell(cell, pos: torch.Tensor, shape: tuple) -> torch.Tensor:
    if not torch.is_tensor(cell):
        try:
            cell = torch.as_tensor(cell, dtype=pos.dtype)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"cell must be a tensor of shape {list(shape)} (rows = lattice vectors), "
                            f"got {type(cell).__name__}") from None
    if not cell.is_floating_point():
        raise TypeError(f"cell must be a floating-point tensor {list(shape)}, got dtype {cell.dtype}")
    if tuple(cell.shape) != tuple(shape):
        raise ValueError(f"cell must have shape {list(shape)} (rows = lattice vectors), got {list(cell.shape)}")
    return cell


def _internal_cell(cell: torch.Tensor, pbc: list) -> torch.Tensor:
    """float64 [3, 3]: the periodic rows of ``cell``; the others an orthonormal complement of them."""
    cell = cell.detach().to(torch.float64)  # [3, 3]
    if not bool(torch.isfinite(cell).all()):
        raise ValueError("cell must be finite (found NaN or inf)")
    norms = cell.norm(dim=-1).tolist()  # [3]
    for a in range(3):
        if pbc[a] and norms[a] == 0.0:
            raise ValueError(f"pbc[{a}] is True but cell[{a}] (lattice vector {a}) is zero")
    periodic = [a for a in range(3) if pbc[a]]
    other = [a for a in range(3) if not pbc[a]]
    out = cell.clone()  # [3, 3]
    if other:
        if periodic:
            _, _, vh = torch.linalg.svd(cell[periodic], full_matrices=True)  # vh [3, 3]
            complement = vh[len(periodic):]  # [3 - m, 3] orthonormal, orthogonal to the periodic rows
        else:
            complement = torch.eye(3, dtype=torch.float64, device=cell.device)
        out[other] = complement
    # singular: the (periodic) lattice vectors are (nearly) linearly dependent
    det = float(torch.linalg.det(out))
    scale = math.prod(max(n, 1e-300) if pbc[a] else 1.0 for a, n in enumerate(norms))
    if not abs(det) > 1e-10 * scale:
        raise ValueError(f"cell is singular: its periodic lattice vectors are linearly dependent "
                         f"(|det| = {abs(det):.3g}); rows of cell are the lattice vectors")
    return out


# ----------------------------------------------------------------------------
# Sorting helper
# ----------------------------------------------------------------------------
def _lexsort(*keys: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by ``keys[0]``, then ``keys[1]``, ... (stable sorts, last key first)."""
    perm = torch.argsort(keys[-1], stable=True)  # [E]
    for k in reversed(keys[:-1]):
        perm = perm[torch.argsort(k[perm], stable=True)]  # [E]
    return perm


# ----------------------------------------------------------------------------
# The neighbour list
# ----------------------------------------------------------------------------
def neighbor_list(
    pos: torch.Tensor,
    cutoff: float,
    cell: torch.Tensor | None = None,
    pbc=(False, False, False),
    self_interaction: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""All edges ``(j, S) -> i`` with ``|pos[j] - pos[i] + S @ cell| < cutoff``.

    Args:
        pos: ``[N, 3]`` Cartesian positions (may lie outside the cell).
        cutoff: positive radius (strict inequality).
        cell: ``[3, 3]`` lattice vectors as rows (ASE's ``atoms.cell``), or ``None``
            for free space.  Rows of non-periodic axes may be zero.
        pbc: a bool, or three bools: periodicity along each lattice vector.
            ``pbc`` True along an axis needs a ``cell``.
        self_interaction: also list the zero-length edge ``(i, 0) -> i``.

    Returns:
        ``edge_index [2, E]`` (int64, ``pos.device``), row 0 the source ``j``,
        row 1 the target ``i``; ``shifts [E, 3]`` (``pos.dtype``, integer
        values, zero along non-periodic axes), such that the edge vector is
        ``pos[j] - pos[i] + shifts @ cell``.  Columns sorted by ``(i, j, S)``.

    Raises ``TypeError``/``ValueError`` naming the argument for a bad ``pos``
    (not ``[N, 3]`` float, not finite), ``cutoff`` (not > 0), ``cell`` (not
    ``[3, 3]``, singular, zero vector along a periodic axis) or ``pbc``.

    >>> pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    >>> neighbor_list(pos, 1.5)                           # free space: shifts are zero
    (tensor([[1, 0],
            [0, 1]]), tensor([[0., 0., 0.],
            [0., 0., 0.]]))
    >>> cell = torch.diag(torch.tensor([1.9, 10.0, 10.0]))
    >>> ei, S = neighbor_list(pos, 1.5, cell, pbc=[True, False, False])   # a periodic chain
    >>> torch.cat([ei.T, S[:, :1].long()], dim=1)          # rows (j, i, S_x)
    tensor([[ 1,  0, -1],
            [ 1,  0,  0],
            [ 0,  1,  0],
            [ 0,  1,  1]])
    >>> neighbor_list(pos, -1.0)
    Traceback (most recent call last):
    ...
    ValueError: cutoff must be a positive finite number, got -1.0
    >>> neighbor_list(pos, 1.5, cell[:2], pbc=True)
    Traceback (most recent call last):
    ...
    ValueError: cell must have shape [3, 3] (rows = lattice vectors), got [2, 3]
    """
    check_pos(pos)
    cutoff = _check_cutoff(cutoff)
    pbc_t = _check_pbc(pbc, (3,))
    if cell is None:
        if bool(pbc_t.any()):
            raise ValueError(f"pbc={pbc_t.tolist()} needs a cell [3, 3], got cell=None")
        cell_t = None
    else:
        cell_t = _check_cell(cell, pos, (3, 3))
    return _neighbor_list(pos, cutoff, cell_t, pbc_t.tolist(), bool(self_interaction))


def _neighbor_list(pos, cutoff, cell, pbc, self_interaction):
    device, dtype = pos.device, pos.dtype
    N = pos.shape[0]
    p = pos.detach().to(torch.float64)  # [N, 3]
    if not bool(torch.isfinite(p).all()):
        raise ValueError("pos must be finite (found NaN or inf)")
    if cell is None:
        C = torch.eye(3, dtype=torch.float64, device=device)  # [3, 3]
        cell64 = torch.zeros(3, 3, dtype=torch.float64, device=device)  # [3, 3]
    else:
        C = _internal_cell(cell.to(device), pbc)  # [3, 3]
        cell64 = cell.detach().to(device=device, dtype=torch.float64)  # [3, 3]
    if N == 0:
        return (torch.zeros(2, 0, dtype=torch.int64, device=device),
                torch.zeros(0, 3, dtype=dtype, device=device))

    periodic = torch.tensor(pbc, dtype=torch.bool, device=device)  # [3]
    Cinv = torch.linalg.inv(C)  # [3, 3]
    d = 1.0 / Cinv.norm(dim=0)  # [3] distance between lattice planes
    f = p @ Cinv  # [N, 3] fractional coordinates
    n0 = torch.where(periodic, torch.floor(f), torch.zeros_like(f))  # [N, 3] wrap count
    fw = f - n0  # [N, 3] in [0, 1) along periodic axes
    lo = fw.min(dim=0).values  # [3]
    hi = fw.max(dim=0).values  # [3]
    d_l, lo_l, hi_l = d.tolist(), lo.tolist(), hi.tolist()  # host sync

    # bins per axis (nb), bin width in fractional units (w), search reach in bins (k)
    nb, w, k = [], [], []
    for a in range(3):
        if pbc[a]:
            n = max(1, int(math.floor(d_l[a] / cutoff)))
            nb.append(n)
            w.append(1.0 / n)
            k.append(max(1, int(math.ceil(cutoff * n / d_l[a] * (1 - 1e-12)))))
        else:
            width = cutoff / d_l[a] * (1 + 1e-9)
            nb.append(int((hi_l[a] - lo_l[a]) / width) + 1)
            w.append(width)
            k.append(1)
    # cap the number of bins (a far-away atom, a huge sparse cell): coarser bins keep memory O(N)
    max_bins = max(64, 8 * N)
    while math.prod(nb) > max_bins:
        a = max(range(3), key=lambda t: nb[t])
        if pbc[a]:
            nb[a] = max(1, nb[a] // 2)
            w[a] = 1.0 / nb[a]
            k[a] = max(1, int(math.ceil(cutoff * nb[a] / d_l[a] * (1 - 1e-12))))
        else:
            w[a] *= 2.0
            nb[a] = int((hi_l[a] - lo_l[a]) / w[a]) + 1

    nb_t = torch.tensor(nb, dtype=torch.int64, device=device)  # [3]
    w_t = torch.tensor(w, dtype=torch.float64, device=device)  # [3]
    origin = torch.where(periodic, torch.zeros_like(lo), lo)  # [3]
    b = torch.floor((fw - origin) / w_t).to(torch.int64)  # [N, 3]
    b = torch.minimum(torch.clamp(b, min=0), nb_t - 1)  # [N, 3] (rounding at f = 1)
    key = (b[:, 0] * nb[1] + b[:, 1]) * nb[2] + b[:, 2]  # [N]
    key_sorted, order = torch.sort(key, stable=True)  # [N], [N]

    # Bin offsets within reach, only half of them: the zero offset and the lexicographically
    # positive ones.  An edge (j, S) -> i found with offset o is mirrored into (i, -S) -> j, which
    # would be found with offset -o; pairs within one bin and one image (o = 0) come both ways.
    rng = [torch.arange(-k[a], k[a] + 1, device=device) for a in range(3)]
    offsets = torch.cartesian_prod(*rng).reshape(-1, 3)  # [K, 3], lexicographic: row K-1-t = -row t
    offsets = offsets[offsets.shape[0] // 2:]  # [Kh, 3] row 0 = (0, 0, 0)
    Kh = offsets.shape[0]
    nbb = b[:, None, :] + offsets[None, :, :]  # [N, Kh, 3] neighbour bin, unwrapped
    img = torch.div(nbb, nb_t, rounding_mode="floor")  # [N, Kh, 3] image of the neighbour bin
    img = torch.where(periodic, img, torch.zeros_like(img))  # [N, Kh, 3]
    nbw = nbb - img * nb_t  # [N, Kh, 3] wrapped along periodic axes
    valid = ((nbw >= 0) & (nbw < nb_t)).all(dim=-1)  # [N, Kh] (non-periodic: outside = empty)
    nkey = (nbw[..., 0] * nb[1] + nbw[..., 1]) * nb[2] + nbw[..., 2]  # [N, Kh]
    nkey = torch.where(valid, nkey, torch.full_like(nkey, -1))  # [N, Kh] -1 matches no atom
    start = torch.searchsorted(key_sorted, nkey, side="left").reshape(-1)  # [N Kh]
    count = torch.searchsorted(key_sorted, nkey, side="right").reshape(-1) - start  # [N Kh]

    # Candidates: P pairs (segment = (i, offset), position in the bin-sorted atom list).  The
    # P-sized work is kept to 1-D gathers (coordinates stored as three rows): each segment carries
    # the vector  S_w @ C - x_w[i],  so a candidate vector is one gather plus one add per axis.
    xw = p - n0 @ cell64  # [N, 3] wrapped positions
    xs = xw[order].T.contiguous()  # [3, N] sorted by bin
    seg_vec = (img.to(torch.float64) @ cell64 - xw[:, None, :]).reshape(-1, 3).T.contiguous()  # [3, N Kh]
    seg = torch.repeat_interleave(torch.arange(count.numel(), device=device), count)  # [P]
    jpos = torch.arange(seg.numel(), device=device) + (start - (torch.cumsum(count, 0) - count)).index_select(0, seg)  # [P]
    d2 = torch.zeros(seg.numel(), dtype=torch.float64, device=device)  # [P]
    for c in range(3):
        t = xs[c].index_select(0, jpos).add_(seg_vec[c].index_select(0, seg))  # [P]
        d2.addcmul_(t, t)
    # coarse filter in wrapped coordinates (a slightly larger radius), exact filter below
    near = torch.nonzero(d2 < (cutoff * (1 + 1e-8)) ** 2).squeeze(1)  # [E']
    seg, jpos = seg.index_select(0, near), jpos.index_select(0, near)  # [E'], [E']
    i = torch.div(seg, Kh, rounding_mode="floor")  # [E'] target
    j = order.index_select(0, jpos)  # [E'] source
    # shift of the given positions: S = S_w - n0[j] + n0[i]
    S = img.reshape(-1, 3).index_select(0, seg).to(torch.float64) - n0.index_select(0, j) + n0.index_select(0, i)  # [E', 3]
    vec = p.index_select(0, j) - p.index_select(0, i) + S @ cell64  # [E', 3] exactly what the caller computes
    keep = vec.square().sum(dim=-1) < cutoff * cutoff  # [E']
    if not self_interaction:
        keep = keep & ~((i == j) & (S == 0).all(dim=-1))
    mirror = keep & (seg % Kh != 0)  # [E'] found with a positive offset: add the reverse edge
    i, j, S = (torch.cat([i[keep], j[mirror]]), torch.cat([j[keep], i[mirror]]),
               torch.cat([S[keep], 0.0 - S[mirror]]))  # [E], [E], [E, 3] (0 - S: no -0.0)
    perm = _sort_edges(i, j, S, N)  # [E]
    edge_index = torch.stack([j[perm], i[perm]])  # [2, E]
    return edge_index, S[perm].to(dtype)  # [2, E], [E, 3]


def _sort_edges(i: torch.Tensor, j: torch.Tensor, S: torch.Tensor, N: int) -> torch.Tensor:
    """Permutation sorting edges by (i, j, S): one int64 key when it fits, else stable sorts."""
    if i.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=i.device)
    Si = S.to(torch.int64)  # [E, 3]
    lo = Si.min(dim=0).values  # [3]
    span = (Si.max(dim=0).values - lo + 1).tolist()  # [3] host sync
    if N * N * math.prod(span) < 2**62:
        u = Si - lo  # [E, 3] non-negative
        key = (((i * N + j) * span[0] + u[:, 0]) * span[1] + u[:, 1]) * span[2] + u[:, 2]  # [E]
        return torch.argsort(key)  # keys are unique
    return _lexsort(i, j, Si[:, 0], Si[:, 1], Si[:, 2])


def batched_neighbor_list(
    pos: torch.Tensor,
    cutoff: float,
    cell: torch.Tensor | None = None,
    pbc=None,
    batch: torch.Tensor | None = None,
    self_interaction: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":func:`neighbor_list` for a batch of ``G`` structures, with global node indices.

    Structure ``g`` holds the atoms with ``batch == g`` and has cell ``cell[g]``
    and periodicity ``pbc[g]``; edges never connect two structures, and the
    edge vector of edge ``e = (j, i)`` is ``pos[j] - pos[i] + shifts[e] @ cell[batch[i]]``.

    Args:
        pos: ``[N, 3]`` positions of all atoms.
        cutoff: positive radius.
        cell: ``[G, 3, 3]`` lattice vectors (rows) per structure, or ``None`` (free space).
        pbc: ``[G, 3]`` bools, a bool, or ``None``: ``None`` means periodic along
            every axis when ``cell`` is given (a batch of bulk crystals) and free
            space when it is not.
        batch: ``[N]`` structure index of each atom (any order), ``None`` = one structure.
        self_interaction: also list the zero-length edges ``(i, 0) -> i``.

    Returns ``edge_index [2, E]`` (int64) and ``shifts [E, 3]`` (``pos.dtype``),
    sorted by ``(i, j, S)``.  Implementation: a loop over the structures (one
    :func:`neighbor_list` call each; each structure has its own cell and bins),
    so the cost is linear in ``N`` plus a small per-structure overhead.

    >>> pos = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0.0, 0, 0]])
    >>> cell = torch.eye(3).expand(2, 3, 3)
    >>> ei, S = batched_neighbor_list(pos, 0.6, cell, batch=torch.tensor([0, 0, 1]))
    >>> ei
    tensor([[1, 1, 0, 0],
            [0, 0, 1, 1]])
    >>> S[:, 0]
    tensor([-1.,  0.,  0.,  1.])
    """
    check_pos(pos)
    cutoff = _check_cutoff(cutoff)
    N, device = pos.shape[0], pos.device
    if batch is None:
        batch = torch.zeros(N, dtype=torch.int64, device=device)  # [N]
    else:
        check_batch(batch, N)
        batch = batch.to(device=device, dtype=torch.int64)  # [N]
    if cell is None:
        G = int(batch.max()) + 1 if N > 0 else 0
        if pbc is None:
            pbc = False
        pbc_t = _check_pbc(pbc, (G, 3))
        if bool(pbc_t.any()):
            raise ValueError("pbc has a True entry but cell is None: pass cell [G, 3, 3]")
    else:
        if not torch.is_tensor(cell):
            cell = torch.as_tensor(cell, dtype=pos.dtype)
        if cell.dim() != 3:
            raise ValueError(f"cell must have shape [G, 3, 3] (one cell per structure), got {list(cell.shape)}")
        G = cell.shape[0]
        _check_cell(cell, pos, (G, 3, 3))
        pbc_t = _check_pbc(True if pbc is None else pbc, (G, 3))
    if N > 0 and int(batch.max()) >= G:
        raise ValueError(f"batch has index {int(batch.max())} but cell holds only G = {G} structures")

    order = torch.argsort(batch, stable=True)  # [N] atoms grouped by structure
    counts = torch.bincount(batch, minlength=G).tolist()  # [G]
    edges, shifts = [], []
    start = 0
    for g in range(G):
        idx = order[start:start + counts[g]]  # [n_g] global indices
        start += counts[g]
        if idx.numel() == 0:
            continue
        ei, S = _neighbor_list(pos[idx], cutoff, None if cell is None else cell[g],
                               pbc_t[g].tolist(), bool(self_interaction))
        edges.append(idx[ei])  # [2, E_g]
        shifts.append(S)  # [E_g, 3]
    if not edges:
        return (torch.zeros(2, 0, dtype=torch.int64, device=device),
                torch.zeros(0, 3, dtype=pos.dtype, device=device))
    edge_index = torch.cat(edges, dim=1)  # [2, E]
    S = torch.cat(shifts)  # [E, 3]
    perm = _sort_edges(edge_index[1], edge_index[0], S, N)  # [E]
    return edge_index[:, perm], S[perm]
