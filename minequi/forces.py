r"""Forces and stress from an energy by automatic differentiation.

Given any energy :math:`E(x, C)` of positions ``x [N, 3]`` (rows) and cell
``C [3, 3]`` (rows = lattice vectors, ASE's convention) built from torch
operations,

* the **forces** are :math:`F_n = -\partial E / \partial x_n` (eV/A);
* the **stress** is the derivative with respect to a homogeneous *symmetric
  strain* :math:`\varepsilon` that deforms positions, cell and hence every
  periodic image the same way (row vectors: :math:`x' = x (I + \varepsilon)`,
  :math:`C' = C (I + \varepsilon)`):

  .. math:: \sigma = \frac{1}{V} \left.\frac{\partial E(x (I + \varepsilon), C (I + \varepsilon))}
                                       {\partial \varepsilon}\right|_{\varepsilon = 0},
            \qquad V = |\det C| \quad (\text{eV/A}^3).

Convention: this is **ASE's sign** (``atoms.get_stress()``): positive stress is
*tensile* (the energy goes down when the cell shrinks, the cell "pulls inward");
the pressure is :math:`p = -\operatorname{tr}\sigma / 3`.  The virial is
:math:`W = -V \sigma = -\partial E / \partial \varepsilon`, and VASP's
``OUTCAR`` stress ("in kB") is :math:`-\sigma` (positive = compressive), in
kilobar: ``-sigma / ase.units.GPa * 10``.  For a pair potential
:math:`E = \tfrac12 \sum_{i \ne j} u(|r_{ij}|)` the strain derivative gives the
familiar :math:`\sigma = \frac{1}{2V} \sum_{ij} u'(r_{ij})\, r_{ij} \otimes r_{ij} / |r_{ij}|`.
Because ``edge_vec = pos[j] - pos[i] + shifts @ cell`` is linear in ``pos``
and ``cell``, the strain reaches every periodic image through the cell, which
is why an energy built on :mod:`minequi.neighbor_list` has the right stress
with no extra work.

How the derivatives are taken (autograd, one backward pass for both):
a zero displacement ``u`` (a fresh leaf that requires grad) is added to ``pos``
and a zero strain ``eps [G, 3, 3]`` is symmetrised and applied,
``pos' = (pos + u) + (pos + u) @ sym(eps)[batch]``,
``cell' = cell + cell @ sym(eps)``; then ``F = -dE/du`` and
``sigma = (1/V) dE/d eps``.  ``pos`` itself is never detached or replaced, so
if it is the output of an upstream computation the energy stays connected to it;
and ``pos`` need not require grad.  ``create_graph=True`` keeps the graph of
the derivatives, so a loss on forces or stress backpropagates into the
parameters of the energy (training); with ``create_graph=False`` the three
outputs are detached (inference).

>>> import torch
>>> k = 2.0
>>> def energy_fn(pos, cell):                   # a spring between two atoms, rest length 1
...     return 0.5 * k * ((pos[1] - pos[0]).norm() - 1.0) ** 2
>>> pos = torch.tensor([[0.0, 0, 0], [1.5, 0, 0]], dtype=torch.float64)
>>> E, F, S = energy_forces_stress(energy_fn, pos)
>>> E.item(), F[:, 0].tolist(), S             # the spring pulls the atoms together
(0.25, [1.0, -1.0], None)

In a periodic cell (a chain along x of one atom per 1.5 A, bonded to its image):

>>> cell = torch.diag(torch.tensor([1.5, 10.0, 10.0], dtype=torch.float64))
>>> def chain(pos, cell):
...     return 0.5 * k * ((pos[0] + cell[0] - pos[0]).norm() - 1.0) ** 2
>>> E, F, S = energy_forces_stress(chain, pos[:1], cell, pbc=True)
>>> S[0, 0].item() * 150.0                      # V * sigma_xx = dE/d eps_xx = k (1.5 - 1) 1.5
1.5
"""
from __future__ import annotations

from typing import Callable

import torch

from .graph import check_batch, check_pos

__all__ = ["energy_forces_stress"]


def energy_forces_stress(
    energy_fn: Callable,
    pos: torch.Tensor,
    cell: torch.Tensor | None = None,
    pbc=None,
    batch: torch.Tensor | None = None,
    compute_stress: bool | None = None,
    create_graph: bool = False,
):
    r"""Energy, forces ``-dE/dpos`` and stress ``(1/V) dE/d eps`` (ASE's sign) of ``energy_fn``.

    Args:
        energy_fn: ``energy_fn(pos, cell) -> energy``; a scalar for one structure,
            ``[G]`` with ``batch``.  It must compute everything from the ``pos`` and
            ``cell`` it receives (periodic edge vectors as
            ``pos[j] - pos[i] + shifts @ cell``), so that the strain reaches them.
        pos: ``[N, 3]`` positions (rows).  Need not require grad.
        cell: ``[3, 3]`` (one structure) or ``[G, 3, 3]`` (with ``batch``), rows =
            lattice vectors, or ``None`` (no cell: no stress).
        pbc: a bool, ``[3]`` or ``[G, 3]`` bools, or ``None`` = periodic along every
            axis when a cell is given.  Only used to decide ``compute_stress=None``.
        batch: ``[N]`` structure index per atom, or ``None`` (one structure).
        compute_stress: ``None`` = when a cell is given and every axis of every
            structure is periodic; ``True`` needs a non-singular cell.
        create_graph: keep the derivative graph (training on forces/stress).

    Returns:
        ``(energy, forces [N, 3], stress)``: ``energy`` as returned by
        ``energy_fn``; ``stress`` ``[3, 3]`` (or ``[G, 3, 3]`` with ``batch``) or
        ``None``.  All detached unless ``create_graph``.
    """
    if not callable(energy_fn):
        raise TypeError(f"energy_fn must be callable energy_fn(pos, cell) -> energy, got {type(energy_fn).__name__}")
    check_pos(pos)
    N = pos.shape[0]
    batched = batch is not None
    if batched:
        check_batch(batch, N)
        batch = batch.to(device=pos.device, dtype=torch.int64)  # [N]
    if cell is not None:
        if not torch.is_tensor(cell) or not cell.is_floating_point():
            raise TypeError("cell must be a floating-point tensor [3, 3] (or [G, 3, 3] with batch)")
        want = "[G, 3, 3]" if batched else "[3, 3]"
        if cell.shape[-2:] != (3, 3) or cell.dim() != (3 if batched else 2):
            raise ValueError(f"cell must have shape {want} (rows = lattice vectors), got {list(cell.shape)}")
        if cell.dtype != pos.dtype:
            raise TypeError(f"cell dtype {cell.dtype} must match pos dtype {pos.dtype}")
    G = cell.shape[0] if (batched and cell is not None) else None
    if G is not None and N > 0 and not torch.compiler.is_compiling() and int(batch.max()) >= G:  # one host sync
        raise ValueError(f"batch holds structure index {int(batch.max())} but cell [G, 3, 3] has only G = {G} cells")
    if pbc is not None:
        try:
            p = torch.as_tensor(pbc)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"pbc must be a bool or a tensor of bools [3] (or [G, 3]), got {pbc!r}") from None
        if p.dtype != torch.bool and (p.is_floating_point() or p.is_complex() or not bool(((p == 0) | (p == 1)).all())):
            raise TypeError(f"pbc must be a bool or a tensor of bools, got {pbc!r}")
        shapes = [(), (3,)] + ([(G, 3)] if G is not None else [(p.shape[0], 3)] if batched and p.dim() == 2 else [])
        if tuple(p.shape) not in shapes:
            want = "[3] or [G, 3]" if batched else "[3]"
            raise ValueError(f"pbc must be a bool or have shape {want} (one flag per lattice vector), "
                             f"got shape {list(p.shape)}")

    if compute_stress is None:
        if cell is None:
            compute_stress = False
        elif pbc is None:
            compute_stress = True
        else:
            compute_stress = bool(p.bool().all())  # p: pbc as a tensor, checked above
    if compute_stress and cell is None:
        raise ValueError("compute_stress=True needs a cell [3, 3] (or [G, 3, 3] with batch), got cell=None")

    # forces are gradients, also when the caller runs under torch.no_grad() (evaluation, MD):
    # without this the energy would not require grad and the forces would silently be zero
    with torch.enable_grad():
        u = torch.zeros_like(pos, requires_grad=True)  # [N, 3] zero displacement (a fresh leaf)
        x = pos + u  # [N, 3]
        inputs = [u]
        cell_in = cell
        if compute_stress:
            cells = cell if batched else cell[None]  # [G, 3, 3]
            eps = torch.zeros_like(cells, requires_grad=True)  # [G, 3, 3]
            sym = 0.5 * (eps + eps.transpose(-1, -2))  # [G, 3, 3]
            per_atom = sym[batch] if batched else sym[0].expand(N, 3, 3)  # [N, 3, 3]
            x = x + torch.einsum("na,nab->nb", x, per_atom)  # [N, 3]  x (I + eps)
            cells = cells + cells @ sym  # [G, 3, 3]  C (I + eps)
            cell_in = cells if batched else cells[0]
            inputs.append(eps)

        energy = energy_fn(x, cell_in)
        if not torch.is_tensor(energy):
            raise TypeError(f"energy_fn must return a tensor, got {type(energy).__name__}")
        if not batched and energy.dim() != 0:
            raise ValueError(f"energy_fn must return a scalar energy [] without batch, got shape {list(energy.shape)}")
        if batched and (energy.dim() != 1 or (G is not None and energy.shape[0] != G)):
            want = f"[G] = [{G}]" if G is not None else "[G]"
            raise ValueError(f"energy_fn must return energies {want} with batch, got shape {list(energy.shape)}")
        if not energy.requires_grad:
            # an energy that does not depend on pos at all: zero forces and stress
            grads = [torch.zeros_like(t) for t in inputs]
        else:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=create_graph, retain_graph=create_graph, allow_unused=True
            )
            grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]
    forces = -grads[0]  # [N, 3]
    stress = None
    if compute_stress:
        cells = cell if batched else cell[None]  # [G, 3, 3]
        volume = torch.linalg.det(cells).abs()  # [G]
        if bool((volume == 0).any()):
            raise ValueError("compute_stress needs a non-singular cell (volume 0)")
        stress = grads[1] / volume[:, None, None]  # [G, 3, 3]
        if not batched:
            stress = stress[0]  # [3, 3]
    if not create_graph:
        energy, forces = energy.detach(), forces.detach()
        stress = None if stress is None else stress.detach()
    return energy, forces, stress
