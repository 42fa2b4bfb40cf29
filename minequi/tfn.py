r"""A Tensor Field Network: ``TensorFieldNetwork``.

Thomas et al. :cite:`thomas2018tensor` build an E(3)-equivariant network for point
clouds from three equivariant layers, repeated:

1. **point convolution** (:class:`~minequi.PointConv`): every node
   gathers its neighbours' features through radial filters times spherical harmonics;
2. **self-interaction** (:class:`~minequi.Linear`): an equivariant linear
   map mixing the channels of each irrep at each node (with a bias on the ``0e``
   scalars only);
3. **nonlinearity**: here the gate of Weiler et al. (:class:`~minequi.Gate`, which
   replaced TFN's norm nonlinearity in later work): SiLU on ``0e`` scalars, tanh on
   ``0o`` pseudoscalars (an odd function keeps them odd), and every ``l > 0`` irrep
   multiplied by the sigmoid of its own ``0e`` gate scalar (each activation scaled to
   unit second moment, :func:`~minequi.point_conv.normalize2mom`, so that the features
   keep their scale through the layers).

A readout :class:`~minequi.Linear` maps the last features to ``irreps_out`` at every
node; with a ``batch`` vector the node outputs are summed (or averaged) per graph.

Which irreps a layer can produce follows the selection rules: from irreps ``x`` and
the edge harmonics ``0e + 1o + 2e + ...`` (parity :math:`(-1)^l`), a path
``(l_1, p_1) x (l_2, (-1)^{l_2}) -> (l_3, p_1 (-1)^{l_2})`` needs
:math:`|l_1 - l_2| \le l_3 \le l_1 + l_2`.  Each layer keeps the entries of
``irreps_hidden`` that its convolution can reach (as in e3nn's examples), so the
first layers may be narrower than ``irreps_hidden``.

Parity: O(3) versus SO(3)
-------------------------
Every layer is equivariant to O(3), reflections included.  So a ``0e`` output is
*invariant* under reflections: a chiral shape and its mirror image get the same
output, whatever the hidden irreps.  A ``0o`` (pseudoscalar) output *changes sign*
under a reflection, so it can tell the two apart.  It must be built: starting from
``0e`` node features, the harmonics give ``0e, 1o, 2e`` (natural parity
:math:`(-1)^l`) after one layer; a second layer can give "unnatural" irreps such as
``1e`` (a cross product, ``1o x 1o``) and ``2o``; only a third layer can give ``0o``
(e.g. ``1e x 1o``, a triple product :math:`a \cdot (b \times c)`).  A network whose
``irreps_hidden`` have only natural parities (``0e + 1o + 2e + ...``) never produces
``0o``, and asking it for a ``0o`` output raises ``ValueError``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .gate import Gate
from .graph import check_batch, check_pos, pool_graphs
from .irreps import Irrep, Irreps
from .linear import Linear
from .point_conv import PointConv, normalize2mom

__all__ = ["TensorFieldNetwork"]


def _reachable(irreps_x, irreps_sh, allowed):
    """The conv's output irreps: one ``mul1 x ir_out`` entry per distinct pair, over all
    ``"uvu"`` paths from ``irreps_x x irreps_sh`` whose output irrep is in ``allowed``."""
    entries = []
    for mul, ir1 in irreps_x:
        for _, ir2 in irreps_sh:
            for l3 in range(abs(ir1.l - ir2.l), ir1.l + ir2.l + 1):
                ir3 = Irrep(l3, ir1.p * ir2.p)
                if ir3 in allowed and mul > 0 and (mul, ir3) not in entries:
                    entries.append((mul, ir3))
    return Irreps(sorted(entries, key=lambda e: (e[1].l, e[1].p, e[0])))


class TensorFieldNetwork(nn.Module):
    r"""Tensor Field Network: ``num_layers`` x (PointConv -> Linear -> Gate), then a Linear readout.

    Args:
        irreps_in: irreps of the input node features (e.g. ``"1x0e"`` for a constant,
            or one-hot atom types ``"5x0e"``).
        irreps_hidden: the features between layers (each layer keeps the reachable entries).
        irreps_out: the output irreps, e.g. ``"1x0e"`` (invariant), ``"1x0o"``
            (pseudoscalar, changes sign under reflections) or ``"1x1o"`` (a vector per node).
        num_layers: number of convolution blocks.
        lmax: the edge harmonics are ``0e + 1o + ... + lmax`` (parity :math:`(-1)^l`).
        num_basis, cutoff, radial_hidden, avg_num_neighbors: as in :class:`~minequi.PointConv`.
        reduce: ``"sum"`` or ``"mean"`` over the nodes of each graph (used with ``batch``).

    ``forward(x [N, irreps_in.dim], pos [N, 3], edge_index [2, E], batch=None, num_graphs=None)``
    returns ``[N, irreps_out.dim]`` without ``batch`` and ``[num_graphs, irreps_out.dim]`` with
    a ``batch [N]`` vector of graph indices.  ``num_graphs`` defaults to ``batch.max() + 1``
    (one host synchronisation; pass it to avoid that, e.g. under ``torch.compile``).

    >>> tfn = TensorFieldNetwork("1x0e", "8x0e+4x0o+4x1o+4x1e+2x2e+2x2o", "1x0o", num_layers=3, cutoff=1.5)
    >>> [str(layer.irreps_out) for layer in tfn.gates]
    ['8x0e+4x1o+2x2e', '8x0e+4x1o+4x1e+2x2e+2x2o', '8x0e+4x0o+4x1o+4x1e+2x2e+2x2o']
    >>> pos = torch.tensor([[0.0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0]])       # a chiral tetromino
    >>> edge_index = torch.tensor([[1, 2, 0, 0, 3, 2], [0, 0, 1, 2, 2, 3]])       # neighbours at distance 1
    >>> y = tfn(torch.ones(4, 1), pos, edge_index, batch=torch.zeros(4, dtype=torch.long))
    >>> mirror = pos * torch.tensor([1.0, -1.0, 1.0])                           # reflect y -> -y
    >>> y_mirror = tfn(torch.ones(4, 1), mirror, edge_index, batch=torch.zeros(4, dtype=torch.long))
    >>> y.shape, bool(torch.allclose(y_mirror, -y, atol=1e-6)), bool(y.abs() > 1e-6)
    (torch.Size([1, 1]), True, True)
    >>> TensorFieldNetwork("1x0e", "8x0e+4x1o+2x2e", "1x0o")
    Traceback (most recent call last):
    ...
    ValueError: TensorFieldNetwork: irreps_out=1x0o cannot be produced from the last hidden irreps 8x0e+4x1o+2x2e: 0o missing ...
    """

    def __init__(self, irreps_in="1x0e", irreps_hidden="8x0e+4x0o+4x1o+4x1e+2x2e+2x2o", irreps_out="1x0e",
                 num_layers: int = 3, lmax: int = 2, num_basis: int = 8, cutoff: float = 5.0,
                 radial_hidden: int | Sequence[int] = 16, avg_num_neighbors: float = 1.0, reduce: str = "sum"):
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_hidden = Irreps(irreps_hidden)
        self.irreps_out = Irreps(irreps_out)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
            raise ValueError(f"lmax must be a non-negative int, got {lmax!r}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.reduce = reduce
        self.irreps_sh = Irreps([(1, (l, (-1) ** l)) for l in range(lmax + 1)])

        # activations scaled to unit second moment on N(0, 1) inputs, so that the features
        # keep their scale through the layers (as e3nn's normalize2mom)
        silu, tanh, sigmoid = (normalize2mom(f) for f in (torch.nn.functional.silu, torch.tanh, torch.sigmoid))
        allowed = {ir for _, ir in self.irreps_hidden} | {Irrep("0e")}
        self.convs, self.linears, self.gates = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        irreps = self.irreps_in
        for k in range(num_layers):
            conv_out = _reachable(irreps, self.irreps_sh, allowed)
            reach = {ir for _, ir in conv_out}
            hidden = [(mul, ir) for mul, ir in self.irreps_hidden if ir in reach and mul > 0]
            if not hidden:
                raise ValueError(f"TensorFieldNetwork: layer {k} can reach none of irreps_hidden="
                                 f"{self.irreps_hidden} from {irreps} x {self.irreps_sh}")
            scalars = Irreps([(mul, ir) for mul, ir in hidden if ir.l == 0])
            gated = Irreps([(mul, ir) for mul, ir in hidden if ir.l > 0])
            gate = Gate(scalars, [silu if ir.p == 1 else tanh for _, ir in scalars],
                        f"{gated.num_irreps}x0e", sigmoid, gated)
            self.convs.append(PointConv(irreps, self.irreps_sh, conv_out, num_basis, cutoff,
                                        radial_hidden=radial_hidden, avg_num_neighbors=avg_num_neighbors))
            self.linears.append(Linear(conv_out, gate.irreps_in, bias=True))  # self-interaction
            self.gates.append(gate)
            irreps = gate.irreps_out
        missing = [str(ir) for mul, ir in self.irreps_out if mul > 0 and ir not in {r for _, r in irreps}]
        if missing:  # (a Linear would silently output zeros there)
            raise ValueError(
                f"TensorFieldNetwork: irreps_out={self.irreps_out} cannot be produced from the last hidden "
                f"irreps {irreps}: {', '.join(missing)} missing (a Linear readout only maps equal irreps; e.g. "
                f"a 0o output needs 0o in irreps_hidden and at least 3 layers from 0e inputs, see the module "
                f"docstring)")
        self.readout = Linear(irreps, self.irreps_out)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor,
                batch: torch.Tensor | None = None, num_graphs: int | None = None) -> torch.Tensor:
        if batch is not None:  # checked first, before any work
            check_pos(pos)
            check_batch(batch, pos.shape[0])
        for conv, linear, gate in zip(self.convs, self.linears, self.gates):
            x = gate(linear(conv(x, pos, edge_index)))  # [N, hidden dim]
        y = self.readout(x)  # [N, irreps_out.dim]
        if batch is None:
            return y
        return pool_graphs(y, batch, num_graphs, self.reduce)  # [num_graphs, irreps_out.dim]
