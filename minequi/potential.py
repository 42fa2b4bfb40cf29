r"""A NequIP-style equivariant interatomic potential: ``InteratomicPotential``.

An interatomic potential maps a structure -- atomic numbers :math:`Z_i`, positions
:math:`r_i` and, for a crystal, a periodic cell -- to its energy :math:`E`.  As in
NequIP :cite:`batzner2022e3` the energy is a sum of atomic energies, each a function of
the atom's environment within a cutoff :math:`r_c`,

.. math::
   E = \sum_i \big( \sigma\, \varepsilon_i + \mu_{Z_i} \big),

where :math:`\varepsilon_i` is the scalar (``0e``) output of an equivariant network at
atom ``i``, :math:`\sigma` a global scale and :math:`\mu_Z` a per-species reference
energy (both fixed, set from data by :meth:`InteratomicPotential.fit_scale_shift` or
given to the constructor).  The network:

1. **embedding**: the one-hot vector of the atom's species, mapped by a
   :class:`~minequi.Linear` to ``mul_0`` scalars ``0e`` (NequIP's chemical embedding);
2. ``num_layers`` **interaction blocks**, each

   * a :class:`~minequi.PointConv` (depthwise ``"uvu"`` tensor products of the neighbours'
     features with the spherical harmonics of the edge vectors, weighted per edge by a
     radial MLP of the edge length that vanishes smoothly at the cutoff),
   * a :class:`~minequi.Linear` self-interaction (with a bias on the ``0e`` outputs),
   * a :class:`~minequi.Gate` nonlinearity,
   * a residual update :math:`x \leftarrow x + \text{block}(x)` whenever the block's output
     irreps equal its input irreps (every block but the first);

   the **last** block produces only the ``0e`` scalars of ``irreps_hidden`` (as in MACE): the
   readout reads nothing else, so the ``l > 0`` outputs of a full last block would be computed
   and thrown away (its residual adds the input's leading ``0e`` scalars);
3. a **readout** :class:`~minequi.Linear` to one ``0e`` scalar per atom.

The edge vectors are those of a neighbour list (:func:`~minequi.neighbor_list.batched_neighbor_list`),
recomputed *differentiably* from the positions and the cell,

.. math:: r_{ij} = \text{pos}_j - \text{pos}_i + n_{ij}\, \text{cell}_{g(i)},

with :math:`n_{ij}` the integer image shift of edge ``j -> i`` (zero for molecules), so that
the forces :math:`F = -\partial E / \partial \text{pos}` and the stress
:math:`\sigma = V^{-1}\, \partial E / \partial \varepsilon` (a symmetric strain of positions
and cell) follow by automatic differentiation (:func:`~minequi.forces.energy_forces_stress`).

**Symmetry.**  :math:`r_{ij}` is invariant under translations, rotates as a vector under
O(3) and is relabelled by permutations, and every layer is O(3)-equivariant, so the
``0e`` atomic energies are invariant and :math:`E` is E(3)- and permutation-invariant.  Then
:math:`F(Q r + t) = Q F(r)` and :math:`\sigma \to Q \sigma Q^\top`, exactly, whatever the
weights.  **Locality and smoothness.**  Atom ``i``'s energy depends only on atoms within
``num_layers`` cutoffs, and every radial weight goes to zero at :math:`r_c` with its first
two derivatives, so the energy and the forces are continuous when an atom crosses the cutoff.

Units are the caller's (eV and Angstrom with ASE data).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .forces import energy_forces_stress
from .gate import Gate
from .graph import check_batch, check_pos, scatter_sum
from .irreps import Irrep, Irreps
from .linear import Linear
from .neighbor_list import batched_neighbor_list
from .point_conv import PointConv, normalize2mom, point_convolution
from .spherical_harmonics import spherical_harmonics
from .tfn import _reachable

__all__ = ["InteratomicPotential"]

_MAX_Z = 118


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class InteratomicPotential(nn.Module):
    r"""NequIP-style potential: species embedding, ``num_layers`` x (PointConv -> Linear -> Gate,
    residual), per-atom ``0e`` readout, scaled and shifted per species, summed per structure.

    Args:
        species: the atomic numbers the model knows, e.g. ``[1, 6, 8]``; the one-hot
            embedding has one entry per species, in this order.
        cutoff: radius :math:`r_c` of the neighbour list and of the radial functions.
        irreps_hidden: features between layers (each layer keeps the entries its
            convolution can reach, as in :class:`~minequi.TensorFieldNetwork`); the first
            entry must be ``0e`` scalars (they hold the embedding).
        num_layers: number of interaction blocks.
        lmax: the edge harmonics are ``0e + 1o + ... + lmax``.
        num_basis: Bessel functions of the edge length.
        radial_hidden: hidden sizes of the radial MLP (an int or a list).
        avg_num_neighbors: :math:`\bar n`, the convolutions divide their sums by :math:`\sqrt{\bar n}`.
        atomic_energies: :math:`\mu_Z`, one per species (default zeros).
        scale: :math:`\sigma` (default 1).

    ``forward(numbers [N] long, pos [N, 3], cell [G, 3, 3] | None, pbc [G, 3] bool | None,
    batch [N] | None, compute_forces=True, compute_stress=False, create_graph=None)`` returns a
    dict with ``energy [G]``, ``forces [N, 3]`` (if ``compute_forces``) and ``stress [G, 3, 3]``
    (if ``compute_stress``; ASE's sign and units, energy / length^3; NaN for the structures of a
    batch that are not periodic along all three axes, as :func:`~minequi.physics_data.collate`
    marks absent stress labels).  ``cell`` rows are the
    lattice vectors (ASE's); a single structure may pass ``cell [3, 3]`` and ``pbc [3]``.
    ``pbc=None`` with a cell means periodic along all three axes; ``cell=None`` means no
    periodicity (molecules, clusters).  ``create_graph=None`` means ``self.training``: while
    training the forces and the stress keep their graph, so that a loss on them backpropagates
    into the weights.  ``pos`` and the parameters must share one dtype and device.

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = InteratomicPotential([1, 8], cutoff=3.0, irreps_hidden="8x0e+4x1o", num_layers=2).double()
    >>> numbers = torch.tensor([8, 1, 1])
    >>> pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], dtype=torch.float64)
    >>> out = model(numbers, pos)
    >>> out["energy"].shape, out["forces"].shape
    (torch.Size([1]), torch.Size([3, 3]))
    >>> bool(out["forces"].sum(0).abs().max() < 1e-12)   # no net force: the energy is translation invariant
    True
    >>> model(torch.tensor([8, 1, 7]), pos)
    Traceback (most recent call last):
    ...
    ValueError: numbers holds atomic number 7, which is not among the model's species [1, 8]
    """

    def __init__(self, species: Sequence[int], cutoff: float = 4.0, irreps_hidden="16x0e+8x1o+4x2e",
                 num_layers: int = 3, lmax: int = 2, num_basis: int = 8,
                 radial_hidden: int | Sequence[int] = 16, avg_num_neighbors: float = 10.0,
                 atomic_energies: Sequence[float] | None = None, scale: float = 1.0):
        super().__init__()
        if isinstance(species, (str, bytes)) or not all(
                isinstance(z, (int, np.integer)) and not isinstance(z, bool) for z in species):
            raise TypeError(f"species must be a list of integer atomic numbers, e.g. [1, 6, 8], got {species!r}")
        species = [int(z) for z in species]
        if not species or len(set(species)) != len(species) or not all(1 <= z <= _MAX_Z for z in species):
            raise ValueError(f"species must be a non-empty list of distinct atomic numbers in [1, {_MAX_Z}]")
        self.species = species
        self.cutoff = _positive(cutoff, "cutoff")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
            raise ValueError(f"lmax must be a non-negative int, got {lmax!r}")
        self.irreps_hidden = Irreps(irreps_hidden)
        if len(self.irreps_hidden) == 0 or self.irreps_hidden[0].ir != Irrep("0e") or self.irreps_hidden[0].mul < 1:
            raise ValueError(f"irreps_hidden must start with scalars 0e (they hold the species embedding), "
                             f"got {self.irreps_hidden}")
        self.irreps_sh = Irreps([(1, (l, (-1) ** l)) for l in range(lmax + 1)])
        self.avg_num_neighbors = _positive(avg_num_neighbors, "avg_num_neighbors")

        # atomic number -> row of the one-hot embedding (-1: unknown species)
        z_to_index = torch.full((_MAX_Z + 1,), -1, dtype=torch.long)
        z_to_index[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("z_to_index", z_to_index, persistent=False)

        S = len(species)
        self.irreps_embedding = Irreps([(self.irreps_hidden[0].mul, "0e")])
        self.embedding = Linear(f"{S}x0e", self.irreps_embedding)

        silu, tanh, sigmoid = (normalize2mom(f) for f in (torch.nn.functional.silu, torch.tanh, torch.sigmoid))
        self.convs, self.linears, self.gates = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.residual = []  # per block: how many leading columns of its input to add (0: no residual)
        irreps = self.irreps_embedding
        for k in range(num_layers):
            last = k == num_layers - 1  # the readout only reads 0e: the last block makes only 0e
            allowed = {Irrep("0e")} if last else {ir for _, ir in self.irreps_hidden}
            conv_out = _reachable(irreps, self.irreps_sh, allowed)
            reach = {ir for _, ir in conv_out}
            hidden = [(mul, ir) for mul, ir in self.irreps_hidden if ir in reach and mul > 0]
            scalars = Irreps([(mul, ir) for mul, ir in hidden if ir.l == 0])
            gated = Irreps([(mul, ir) for mul, ir in hidden if ir.l > 0])
            gate = Gate(scalars, [silu if ir.p == 1 else tanh for _, ir in scalars],
                        f"{gated.num_irreps}x0e" if gated.num_irreps else "", sigmoid, gated)
            self.convs.append(PointConv(irreps, self.irreps_sh, conv_out, num_basis, self.cutoff,
                                        radial_hidden=radial_hidden, avg_num_neighbors=self.avg_num_neighbors))
            self.linears.append(Linear(conv_out, gate.irreps_in, bias=True))  # self-interaction
            self.gates.append(gate)
            lead = Irreps(list(irreps)[:len(gate.irreps_out)])  # the input's leading entries
            self.residual.append(gate.irreps_out.dim if lead == gate.irreps_out else 0)
            irreps = gate.irreps_out
        self.readout = Linear(irreps, "1x0e")

        if atomic_energies is None:
            atomic_energies = [0.0] * S
        atomic_energies = torch.as_tensor(atomic_energies, dtype=torch.get_default_dtype())
        if atomic_energies.shape != (S,):
            raise ValueError(f"atomic_energies must have one entry per species ({S}), got shape "
                             f"{tuple(atomic_energies.shape)}")
        self.register_buffer("atomic_energies", atomic_energies.clone())  # [S]  mu_Z
        self.register_buffer("scale", torch.tensor(_positive(scale, "scale"), dtype=torch.get_default_dtype()))

    def extra_repr(self):
        return (f"species={self.species}, cutoff={self.cutoff}, layers={len(self.convs)}, "
                f"residual={self.residual}")

    # ------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------
    def species_index(self, numbers: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Row of each atom in the one-hot embedding, ``[N]`` long; ``ValueError`` naming the
        first atomic number that is not among ``species``."""
        if not torch.is_tensor(numbers) or numbers.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"numbers must be an integer tensor [N] of atomic numbers, got "
                            f"{numbers.dtype if torch.is_tensor(numbers) else type(numbers).__name__}")
        if numbers.dim() != 1:
            raise ValueError(f"numbers must have shape [N], got {list(numbers.shape)}")
        numbers = numbers.long()
        index = self.z_to_index[numbers.clamp(0, _MAX_Z)]  # [N]
        if validate and not torch.compiler.is_compiling() and numbers.numel() > 0:
            bad = (index < 0) | (numbers < 0) | (numbers > _MAX_Z)  # [N]
            if bool(bad.any()):  # one host sync
                z = int(numbers[bad][0])
                raise ValueError(f"numbers holds atomic number {z}, which is not among the model's "
                                 f"species {self.species}")
        return index  # [N]

    def _check(self, numbers, pos, cell, pbc, batch):
        check_pos(pos)
        N = pos.shape[0]
        if not torch.is_tensor(numbers) or numbers.shape != (N,):
            raise ValueError(f"numbers must have shape [N] = [{N}] (one atomic number per row of pos), got "
                             f"{list(numbers.shape) if torch.is_tensor(numbers) else type(numbers).__name__}")
        w = self.readout.weight
        if pos.dtype != w.dtype or pos.device != w.device:
            raise TypeError(f"InteratomicPotential: pos is {pos.dtype} on {pos.device} but the parameters are "
                            f"{w.dtype} on {w.device}; use model.to(pos.dtype) or pos.to(...)")
        if batch is None:
            batch = torch.zeros(N, dtype=torch.long, device=pos.device)  # [N]
        else:
            check_batch(batch, N)
            batch = batch.long()
        if cell is not None:
            if not torch.is_tensor(cell):
                raise TypeError(f"cell must be a torch.Tensor [G, 3, 3], got {type(cell).__name__}")
            if cell.shape == (3, 3):
                cell = cell[None]  # [1, 3, 3]
            if cell.dim() != 3 or cell.shape[1:] != (3, 3):
                raise ValueError(f"cell must have shape [G, 3, 3] (rows = lattice vectors), got {list(cell.shape)}")
            if cell.dtype != pos.dtype or cell.device != pos.device:
                raise TypeError(f"cell must have pos's dtype and device ({pos.dtype} on {pos.device}), got "
                                f"{cell.dtype} on {cell.device}")
            G = cell.shape[0]
            if N > 0 and not torch.compiler.is_compiling() and int(batch.max()) >= G:
                raise ValueError(f"batch holds graph index {int(batch.max())} but cell has only G = {G} cells")
            if pbc is None:
                pbc = torch.ones(G, 3, dtype=torch.bool, device=pos.device)  # [G, 3]
        else:
            if pbc is not None and bool(torch.as_tensor(pbc).any()):
                raise ValueError("pbc is True along some axis but no cell was given")
            pbc = None
            G = int(batch.max()) + 1 if N > 0 else 1
        if pbc is not None:
            raw = torch.as_tensor(pbc)
            if raw.dtype != torch.bool:
                raise TypeError(f"pbc must hold booleans (True/False per axis), got dtype {raw.dtype}")
            pbc = raw.to(device=pos.device)
            if pbc.shape == (3,):
                pbc = pbc[None].expand(G, 3)
            if pbc.shape != (G, 3):
                raise ValueError(f"pbc must have shape [G, 3] = [{G}, 3], got {list(pbc.shape)}")
        return cell, pbc, batch, G

    # ------------------------------------------------------------------
    # The network
    # ------------------------------------------------------------------
    def node_energies(self, species_index: torch.Tensor, edge_index: torch.Tensor,
                      edge_vec: torch.Tensor) -> torch.Tensor:
        r"""Atomic energies :math:`\sigma \varepsilon_i + \mu_{Z_i}` ``[N]`` from the species rows
        ``[N]``, the edges ``edge_index [2, E]`` (row 0 source ``j``, row 1 target ``i``) and the
        edge vectors ``edge_vec [E, 3]`` (:math:`r_{ij}`).  No host synchronisation: this is the part
        that ``torch.compile(fullgraph=True)`` can capture."""
        N = species_index.shape[0]
        onehot = torch.nn.functional.one_hot(species_index, len(self.species)).to(edge_vec.dtype)  # [N, S]
        x = self.embedding(onehot)  # [N, mul_0]
        # the edge harmonics and the radial basis are the same for every layer: computed once
        conv0 = self.convs[0]
        r = torch.linalg.vector_norm(edge_vec, dim=1)  # [E]
        edge_sh = spherical_harmonics(self.irreps_sh.ls, edge_vec, normalize=True)  # [E, sh_dim]
        emb = conv0.basis(r) * (conv0.envelope(r) * conv0.basis_scale)[:, None]  # [E, num_basis]  0 beyond r_c
        for conv, linear, gate, residual in zip(self.convs, self.linears, self.gates, self.residual):
            edge_weight = conv.radial(emb)  # [E, weight_numel]
            y = point_convolution(conv.tp, x, edge_sh, edge_weight, edge_index, N)  # [N, conv_out]
            y = gate(linear(y / math.sqrt(conv.avg_num_neighbors)))  # [N, hidden]
            x = x[:, :residual] + y if residual else y  # [N, hidden]
        eps = self.readout(x)[:, 0]  # [N]
        return self.scale * eps + self.atomic_energies[species_index]  # [N]

    def _energy_fn(self, species_index, edge_index, shifts, batch, G):
        src, dst = edge_index[0], edge_index[1]  # [E], [E]

        def energy_fn(pos, cell):
            edge_vec = pos[src] - pos[dst]  # [E, 3]  r_ij = pos_j - pos_i
            if cell is not None:
                edge_vec = edge_vec + torch.einsum("ek,ekl->el", shifts, cell[batch[dst]])  # [E, 3] + n_ij cell
            return scatter_sum(self.node_energies(species_index, edge_index, edge_vec), batch, G)  # [G]

        return energy_fn

    def forward(self, numbers: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor | None = None,
                pbc: torch.Tensor | None = None, batch: torch.Tensor | None = None, compute_forces: bool = True,
                compute_stress: bool = False, create_graph: bool | None = None) -> dict:
        cell, pbc, batch, G = self._check(numbers, pos, cell, pbc, batch)
        if compute_stress and cell is None:
            raise ValueError("compute_stress=True needs a periodic cell (cell [G, 3, 3]); the stress of a "
                             "molecule or cluster is not defined")
        species_index = self.species_index(numbers)  # [N]
        edge_index, shifts = batched_neighbor_list(pos.detach(), self.cutoff, cell.detach() if cell is not None
                                                   else None, pbc, batch)  # [2, E], [E, 3]
        energy_fn = self._energy_fn(species_index, edge_index, shifts.to(pos.dtype), batch, G)
        if not compute_forces and not compute_stress:
            return {"energy": energy_fn(pos, cell)}
        if create_graph is None:
            create_graph = self.training
        strain_cell, periodic = cell, None
        if compute_stress:
            # a batch may mix crystals with molecules: a structure periodic along no axis has only
            # zero shifts, so its cell (often all zeros) is replaced by the identity for the strain
            # derivative, and every structure that is not periodic along all three axes gets NaN stress
            periodic = pbc.all(dim=1)  # [G]
            eye = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)  # [G, 3, 3]
            strain_cell = torch.where(pbc.any(dim=1)[:, None, None], cell, eye)  # [G, 3, 3]
        energy, forces, stress = energy_forces_stress(energy_fn, pos, strain_cell, pbc, batch,
                                                      compute_stress=compute_stress, create_graph=create_graph)
        out = {"energy": energy}
        if compute_forces:
            out["forces"] = forces
        if compute_stress:
            out["stress"] = torch.where(periodic[:, None, None], stress, torch.full_like(stress, math.nan))
        return out

    def energy(self, numbers: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor | None = None,
               pbc: torch.Tensor | None = None, batch: torch.Tensor | None = None) -> torch.Tensor:
        """The energy ``[G]`` alone (differentiable in ``pos`` and ``cell`` if they require grad)."""
        return self.forward(numbers, pos, cell, pbc, batch, compute_forces=False)["energy"]

    # ------------------------------------------------------------------
    # Scale and shift from data
    # ------------------------------------------------------------------
    @torch.no_grad()
    def fit_scale_shift(self, numbers: torch.Tensor, batch: torch.Tensor, energy: torch.Tensor,
                        forces: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Set :math:`\mu_Z` and :math:`\sigma` from training data; returns ``(atomic_energies [S], scale [])``.

        :math:`\mu` solves the least-squares problem :math:`\min_\mu \sum_g (E_g - \sum_Z n_{gZ} \mu_Z)^2`
        (``n_gZ`` the number of atoms of species ``Z`` in structure ``g``; minimum-norm solution,
        so a species that never occurs gets 0).  :math:`\sigma` is the root mean square of the force
        components when ``forces [N, 3]`` are given (NaN rows ignored), as in NequIP, else the RMS
        of the energy residual per :math:`\sqrt{n_g}` (independent atomic contributions).

        Args: ``numbers [N]``, ``batch [N]``, ``energy [G]`` (one per structure), ``forces [N, 3]`` or None.
        """
        index = self.species_index(numbers)  # [N]
        if not torch.is_tensor(energy) or energy.dim() != 1:
            raise ValueError(f"energy must have shape [G], got {getattr(energy, 'shape', type(energy).__name__)}")
        check_batch(batch, index.shape[0])
        G, S = energy.shape[0], len(self.species)
        if index.numel() > 0 and int(batch.max()) >= G:
            raise ValueError(f"batch holds graph index {int(batch.max())} but energy has only G = {G} entries")
        counts = torch.zeros(G, S, dtype=torch.float64)  # [G, S]
        counts.index_put_((batch.long().cpu(), index.cpu()), torch.ones(index.shape[0], dtype=torch.float64),
                          accumulate=True)
        E = energy.detach().to(torch.float64).cpu()  # [G]
        mu = np.linalg.lstsq(counts.numpy(), E.numpy(), rcond=None)[0]  # [S] minimum-norm least squares
        mu = torch.from_numpy(mu)
        if forces is not None:
            if not torch.is_tensor(forces) or forces.shape != (index.shape[0], 3):
                raise ValueError(f"forces must have shape [N, 3] = [{index.shape[0]}, 3], got "
                                 f"{getattr(forces, 'shape', type(forces).__name__)}")
            f = forces.detach().to(torch.float64)
            f = f[~torch.isnan(f).any(dim=1)]  # [N', 3]
            scale = f.square().mean().sqrt()
        else:
            n = counts.sum(dim=1).clamp(min=1)  # [G]
            scale = ((E - counts @ mu) / n.sqrt()).square().mean().sqrt()
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            scale = 1.0  # no spread in the data: keep the network's own scale
        self.atomic_energies.copy_(mu.to(self.atomic_energies))
        self.scale.fill_(scale)
        return self.atomic_energies.clone(), self.scale.clone()
