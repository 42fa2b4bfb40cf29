r"""Equivariant graph attention: ``EquivariantAttention`` and the ``SE3Transformer`` model.

The SE(3)-Transformer of Fuchs et al. :cite:`fuchs2020se3` replaces the plain sum over
neighbours of a tensor field network layer (:class:`~minequi.PointConv`) by an attention-
weighted sum.  For every target node ``i`` and incoming edge ``j -> i``, with
:math:`r_{ij} = \text{pos}_j - \text{pos}_i`:

.. math::
   q_i    &= W_Q\, x_i                                          \quad \text{(query: a per-node Linear)}\\
   k_{ij} &= \big(W_K(|r_{ij}|) \otimes Y(\hat r_{ij})\big)\, x_j  \quad \text{(key: a point convolution)}\\
   v_{ij} &= \big(W_V(|r_{ij}|) \otimes Y(\hat r_{ij})\big)\, x_j  \quad \text{(value: another one)}\\
   \alpha_{ij} &= \frac{u(|r_{ij}|)\, \exp\!\big(\langle q_i, k_{ij}\rangle / \sqrt{d_k}\big)}
                       {\sum_{j'} u(|r_{ij'}|)\, \exp\!\big(\langle q_i, k_{ij'}\rangle / \sqrt{d_k}\big)},
   \qquad x'_i = W_O \sum_{j} \alpha_{ij}\, v_{ij},

as in the paper: queries are a linear map of the target's own features, keys and values
are TFN-style convolutions of the neighbour's features along the edge, the weights are a
softmax over the target's neighbours of the query-key inner product, and the output is the
weighted sum of the values.  Here the convolutions are the library's depthwise ("uvu")
point convolutions after a per-node :class:`~minequi.Linear` (NequIP's linear -> conv
factorisation): keys and values reuse
:meth:`~minequi.point_conv.PointConv.edge_embedding` and
:func:`~minequi.point_conv.edge_messages`, the very code of :class:`~minequi.PointConv`,
stopped before its sum; :math:`d_k` is the key size per head (see **Heads**).

**Why the logit is invariant.**  ``q_i`` and ``k_ij`` have the same irreps
(``irreps_key``), and each block of ``l``-components transforms by the same *orthogonal*
matrix :math:`D^l(Q)` (times the parity sign, the same for both since the irreps are equal).
So :math:`\langle D q, D k\rangle = q^\top D^\top D k = q^\top k`: the inner product summed
over all channels and degrees of a head is invariant under O(3), and trivially under
translations (only :math:`r_{ij}` enters).  The weights :math:`\alpha_{ij}` are therefore
invariant, and the weighted sum of the equivariant values :math:`v_{ij}` is equivariant.
Pairing blocks of *different* irreps (e.g. a ``1o`` query with a ``1e`` key) would give a
pseudoscalar that flips sign under reflections; the layer cannot do that, since queries and
keys share ``irreps_key`` (and every irrep of ``irreps_key`` must occur in ``irreps_in``, or
its query would be identically zero).

**Heads.**  With ``num_heads = H`` every irreps entry ``mul x ir`` of the keys and values is
cut into ``H`` slices of ``mul / H`` channels (so ``H`` must divide every multiplicity); head
``h`` gets slice ``h`` of every entry, its own logits (summed over its key channels and all
their components, divided by :math:`\sqrt{d_k / H}`, the key size per head), its own softmax,
and weights its own value channels.  :math:`W_O` (a :class:`~minequi.Linear` from
``irreps_value`` to ``irreps_out``) then mixes the heads.

**Smooth cutoff.**  A plain softmax is *not* continuous when a neighbour crosses the cutoff:
its value :math:`v_{ij}` vanishes there (the radial weights of :class:`~minequi.PointConv`
go to zero with two derivatives), but its term :math:`\exp(\cdot)` drops out of every other
neighbour's denominator at once, so all the other weights jump.  As in NequIP and Allegro,
which multiply every edge's contribution by the polynomial envelope
:math:`u` (:class:`~minequi.radial.PolynomialCutoff`), the weights here are the softmax
multiplied by :math:`u(|r_{ij}|)` and renormalised (the formula above): a neighbour at the
cutoff has weight 0 and the others change continuously (:math:`C^2`, like :math:`u`).  When
the last neighbour leaves, its weight stays 1 but its value goes to zero, so the output is
continuous then too.  ``smooth_cutoff=False`` gives the plain softmax (the paper's formula).
The weights of a node sum to 1 whenever one of its neighbours lies inside the cutoff; a node
without such a neighbour gets output 0.

**Edge convention** (PyTorch Geometric's, as :class:`~minequi.PointConv`): ``edge_index
[2, E]``, row 0 the source ``j``, row 1 the target ``i``; the softmax runs over the edges
that share a target (:func:`~minequi.graph.scatter_softmax`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .gate import Gate
from .graph import check_batch, check_pos, pool_graphs, scatter_softmax, scatter_sum
from .irreps import Irrep, Irreps
from .linear import Linear
from .point_conv import PointConv, check_graph_inputs, edge_messages, normalize2mom, uvu_instructions

__all__ = ["EquivariantAttention", "SE3Transformer"]


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _live(irreps_x: Irreps, irreps_sh: Irreps, irreps_inner: Irreps) -> list:
    """Entries of ``irreps_inner`` that a ``Linear(irreps_x -> irreps_inner)`` followed by a
    ``"uvu"`` convolution ``irreps_inner x irreps_sh -> irreps_inner`` can make non-zero: those
    reached by a path from an entry whose irrep occurs in ``irreps_x``.

    >>> [str(Irreps([e])) for e in _live(Irreps("1x0e"), Irreps("0e+1o"), Irreps("4x0e+4x1o+2x1o"))]
    ['4x0e', '4x1o']
    """
    present = {ir for mul, ir in irreps_x if mul > 0}
    live_out = {io for i_in, _, io, _ in uvu_instructions(irreps_inner, irreps_sh, irreps_inner)
                if irreps_inner[i_in].ir in present}
    return [e for io, e in enumerate(irreps_inner) if io in live_out and e.mul > 0]


def _head_index(irreps: Irreps, num_heads: int) -> torch.Tensor:
    """``[irreps.dim]`` long: the head of each column (channel ``u`` of ``mul x ir`` -> head
    ``u // (mul / H)``).

    >>> _head_index(Irreps("2x0e+2x1o"), 2).tolist()
    [0, 1, 0, 0, 0, 1, 1, 1]
    """
    heads = []
    for mul, ir in irreps:
        per_head = mul // num_heads
        heads += [u // per_head for u in range(mul) for _ in range(ir.dim)]
    return torch.tensor(heads, dtype=torch.long)


class EquivariantAttention(nn.Module):
    r"""SE(3)-Transformer attention over the incoming edges of every node (see the module docstring).

    Args:
        irreps_in: irreps of the node features ``x``.
        irreps_out: irreps of the output.
        irreps_key: irreps of queries and keys; every irrep must occur in ``irreps_in``
            (same ``l`` *and* parity) and every multiplicity must be divisible by ``num_heads``.
        num_heads: number of attention heads ``H``.
        irreps_sh: degrees of the edge harmonics, each once with parity ``(-1)^l``, e.g.
            ``"0e+1o+2e"``.
        num_basis, cutoff, radial_hidden: as in :class:`~minequi.PointConv` (radial MLPs of
            the key and value convolutions).
        irreps_value: irreps of the values (default ``irreps_out``); every multiplicity must
            be divisible by ``num_heads`` and every irrep of ``irreps_out`` must occur in it.
        smooth_cutoff: multiply the softmax by the polynomial envelope of the edge length and
            renormalise (continuous when neighbours cross the cutoff); ``False``: plain softmax.
        envelope_p: exponent of the envelope.

    There is no ``avg_num_neighbors``: the weights of a node sum to 1, so the aggregation is an
    average and keeps the scale of the values without it.

    ``forward(x [N, irreps_in.dim], pos [N, 3], edge_index [2, E], edge_vec=None) -> [N, irreps_out.dim]``;
    ``edge_vec [E, 3]`` replaces ``pos[j] - pos[i]`` (periodic images), as in
    :class:`~minequi.PointConv`.  :meth:`attention_weights` returns the weights ``[E, H]``.
    ``x``, ``pos`` and the parameters must share one dtype and device (else ``TypeError``).
    ``E = 0`` and ``N = 0`` are allowed.

    >>> att = EquivariantAttention("4x0e+4x1o", "4x0e+4x1o", "4x0e+4x1o", num_heads=2,
    ...                            irreps_sh="0e+1o+2e", num_basis=4, cutoff=2.0)
    >>> pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 1.5, 0]])
    >>> edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])     # 1 -> 0, 2 -> 0, 0 -> 1
    >>> x = torch.randn(3, 16)
    >>> att(x, pos, edge_index).shape
    torch.Size([3, 16])
    >>> a = att.attention_weights(x, pos, edge_index)         # [E, H]
    >>> a.shape, [round(s, 6) for s in (a[0] + a[1]).tolist()], a[2].tolist()
    (torch.Size([3, 2]), [1.0, 1.0], [1.0, 1.0])
    >>> EquivariantAttention("4x0e+4x1o", "4x0e", "4x0e+4x1e", num_heads=2, irreps_sh="0e+1o",
    ...                      num_basis=4, cutoff=2.0)
    Traceback (most recent call last):
    ...
    ValueError: EquivariantAttention: irreps_key=4x0e+4x1e has 1e, which does not occur in irreps_in=4x0e+4x1o ...
    """

    def __init__(self, irreps_in, irreps_out, irreps_key, num_heads: int, irreps_sh, num_basis: int = 8,
                 cutoff: float = 5.0, radial_hidden: int | Sequence[int] = 16, irreps_value=None,
                 smooth_cutoff: bool = True, envelope_p: int = 6):
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        self.irreps_key = Irreps(irreps_key)
        self.irreps_value = self.irreps_out if irreps_value is None else Irreps(irreps_value)
        self.num_heads = H = _positive_int(num_heads, "num_heads")
        self.smooth_cutoff = bool(smooth_cutoff)
        name = "EquivariantAttention"
        for label, irreps in (("irreps_key", self.irreps_key), ("irreps_value", self.irreps_value)):
            if irreps.dim == 0:
                raise ValueError(f"{name}: {label} must not be empty, got {irreps!r}")
            bad = [f"{mul}x{ir}" for mul, ir in irreps if mul % H]
            if bad:
                raise ValueError(f"{name}: num_heads={H} must divide every multiplicity of {label}={irreps} "
                                 f"(each head takes mul / num_heads channels of every entry); not {', '.join(bad)}")
        present = {ir for mul, ir in self.irreps_in if mul > 0}
        for mul, ir in self.irreps_key:
            if ir not in present:
                raise ValueError(
                    f"{name}: irreps_key={self.irreps_key} has {ir}, which does not occur in irreps_in="
                    f"{self.irreps_in} (same l and parity): its queries would be identically zero (a query "
                    f"q = W_Q x only has the irreps of x), and an inner product of different irreps is not invariant")
        missing = [str(ir) for mul, ir in self.irreps_out if mul > 0 and ir not in {r for _, r in self.irreps_value}]
        if missing:
            raise ValueError(f"{name}: irreps_out={self.irreps_out} has {', '.join(missing)}, which does not occur "
                             f"in irreps_value={self.irreps_value} (the output Linear maps equal irreps only)")

        # keys and values: Linear (per node) -> depthwise point convolution (per edge), PointConv's code
        self.key_conv = PointConv(self.irreps_key, irreps_sh, self.irreps_key, num_basis, cutoff,
                                  radial_hidden=radial_hidden, envelope_p=envelope_p)
        self.value_conv = PointConv(self.irreps_value, irreps_sh, self.irreps_value, num_basis, cutoff,
                                    radial_hidden=radial_hidden, envelope_p=envelope_p)
        self.irreps_sh = self.key_conv.irreps_sh
        for label, irreps in (("irreps_key", self.irreps_key), ("irreps_value", self.irreps_value)):
            live = _live(self.irreps_in, self.irreps_sh, irreps)
            dead = [f"{mul}x{ir}" for mul, ir in irreps if mul > 0 and (mul, ir) not in live]
            if dead:  # (they would be zero whatever the input: a silent waste, or a silent bug)
                raise ValueError(
                    f"{name}: {label}={irreps} entries {', '.join(dead)} would always be zero: a depthwise ('uvu') "
                    f"path into them needs an entry of {label} with the same multiplicity whose irrep occurs in "
                    f"irreps_in={self.irreps_in} (use equal multiplicities, or drop those entries)")
        # one per-node Linear for the query and the two convolutions' inputs
        self.lin_in = Linear(self.irreps_in, self.irreps_key + self.irreps_key + self.irreps_value)
        self.lin_out = Linear(self.irreps_value, self.irreps_out)  # W_O: mixes the heads
        self._split = [self.irreps_key.dim, self.irreps_key.dim, self.irreps_value.dim]
        self.scale = (self.irreps_key.dim / H) ** -0.5  # 1 / sqrt(key size per head)
        head_k = _head_index(self.irreps_key, H)  # [dk]
        self.register_buffer("head_k", nn.functional.one_hot(head_k, H).to(torch.get_default_dtype()),
                             persistent=False)  # [dk, H]  0/1: column -> head
        self.register_buffer("head_v", _head_index(self.irreps_value, H), persistent=False)  # [dv] long

    def extra_repr(self):
        return (f"{self.irreps_in} -> {self.irreps_out}, key {self.irreps_key}, value {self.irreps_value}, "
                f"num_heads={self.num_heads}, smooth_cutoff={self.smooth_cutoff}")

    def _attend(self, x, pos, edge_index, edge_vec):
        """``(alpha [E, H], xv [N, dv], edge_sh [E, sh_dim])``: the attention weights and the values' inputs."""
        edge_vec = check_graph_inputs("EquivariantAttention", self.irreps_in, self.lin_in.weight, x, pos,
                                      edge_index, edge_vec)  # [E, 3]
        N, dst = pos.shape[0], edge_index[1]  # messages flow j = edge_index[0] -> i = edge_index[1]
        q, xk, xv = self.lin_in(x).split(self._split, dim=1)  # [N, dk], [N, dk], [N, dv]
        edge_sh, w_k = self.key_conv.edge_embedding(edge_vec)  # [E, sh_dim], [E, weight_numel_k]
        k = edge_messages(self.key_conv.tp, xk, edge_sh, w_k, edge_index)  # [E, dk]  k_ij
        logits = ((q[dst] * k) @ self.head_k) * self.scale  # [E, H]  <q_i, k_ij> per head / sqrt(dk / H)
        alpha = scatter_softmax(logits, dst, N)  # [E, H]  sums to 1 over each target's edges
        if self.smooth_cutoff:
            u = self.key_conv.envelope(torch.linalg.vector_norm(edge_vec, dim=1))  # [E]  0 beyond the cutoff
            alpha = alpha * u[:, None]  # [E, H]
            den = scatter_sum(alpha, dst, N)  # [N, H]
            den = torch.where(den > 0, den, torch.ones_like(den))  # [N, H]  (no neighbour inside: weights 0)
            alpha = alpha / den[dst]  # [E, H]
        return alpha, xv, edge_sh, edge_vec

    def attention_weights(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor,
                          edge_vec: torch.Tensor | None = None) -> torch.Tensor:
        """The attention weights ``alpha [E, H]`` (invariant; each target's weights sum to 1 per head)."""
        return self._attend(x, pos, edge_index, edge_vec)[0]

    def forward(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor,
                edge_vec: torch.Tensor | None = None) -> torch.Tensor:
        alpha, xv, edge_sh, edge_vec = self._attend(x, pos, edge_index, edge_vec)  # [E, H], [N, dv], [E, sh_dim]
        _, w_v = self.value_conv.edge_embedding(edge_vec)  # [E, weight_numel_v]
        v = edge_messages(self.value_conv.tp, xv, edge_sh, w_v, edge_index)  # [E, dv]  v_ij
        out = scatter_sum(v * alpha[:, self.head_v], edge_index[1], pos.shape[0])  # [N, dv]  sum_j alpha_ij^h v_ij^h
        return self.lin_out(out)  # [N, irreps_out.dim]


class SE3Transformer(nn.Module):
    r"""SE(3)-Transformer: ``num_layers`` x (attention + skip -> Gate), then a Linear readout.

    Block ``k`` maps features ``x`` to ``Gate((EquivariantAttention(x) + Linear(x)) / sqrt 2)``:
    the attention layer and a linear skip connection (the paper's self-interaction, which lets
    a node keep its own features; biases on ``0e``) both produce the gate's input, scalars +
    gates + gated irreps, and :class:`~minequi.Gate` applies SiLU / tanh to the ``0e`` / ``0o``
    scalars and a sigmoid gate to every ``l > 0`` copy (activations scaled to unit second
    moment, as in :class:`~minequi.TensorFieldNetwork`).  The ``1/sqrt 2`` keeps the variance
    of the sum of two unit-variance terms at 1.

    Each block's values use the entries of ``irreps_hidden`` that its input can reach (a
    depthwise path from an entry of the same multiplicity whose irrep the input has), and its
    keys the entries of ``irreps_key`` (default ``irreps_hidden``) whose irrep the input has:
    from ``0e`` inputs the first block has scalar queries only, later blocks use every degree.
    Equal multiplicities in ``irreps_hidden`` let every degree be reached.

    Args:
        irreps_in, irreps_hidden, irreps_out: as in :class:`~minequi.TensorFieldNetwork`.
        num_layers: number of attention blocks.
        num_heads: heads of every attention layer (divides every multiplicity).
        lmax: edge harmonics ``0e + 1o + ... + lmax``.
        irreps_key: irreps of queries and keys (default ``irreps_hidden``).
        num_basis, cutoff, radial_hidden, smooth_cutoff: as in :class:`EquivariantAttention`.
        reduce: ``"sum"`` or ``"mean"`` over the nodes of each graph (used with ``batch``).

    ``forward(x [N, irreps_in.dim], pos [N, 3], edge_index [2, E], batch=None, num_graphs=None)``
    returns ``[N, irreps_out.dim]``, or ``[num_graphs, irreps_out.dim]`` with ``batch [N]``;
    ``num_graphs`` defaults to ``batch.max() + 1`` (one host sync; pass it under ``torch.compile``).

    >>> model = SE3Transformer("1x0e", "8x0e+8x1o+8x2e", "1x1o", num_layers=2, num_heads=2, cutoff=2.0)
    >>> [str(att.irreps_key) for att in model.attentions]
    ['8x0e', '8x0e+8x1o+8x2e']
    >>> pos = torch.randn(5, 3)
    >>> edge_index = torch.tensor([[1, 2, 3, 4, 0], [0, 0, 1, 2, 3]])
    >>> model(torch.ones(5, 1), pos, edge_index).shape
    torch.Size([5, 3])
    """

    def __init__(self, irreps_in="1x0e", irreps_hidden="8x0e+8x1o+8x1e+8x2e", irreps_out="1x0e",
                 num_layers: int = 2, num_heads: int = 2, lmax: int = 2, irreps_key=None, num_basis: int = 8,
                 cutoff: float = 5.0, radial_hidden: int | Sequence[int] = 16, smooth_cutoff: bool = True,
                 reduce: str = "sum"):
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_hidden = Irreps(irreps_hidden)
        self.irreps_out = Irreps(irreps_out)
        self.irreps_key = self.irreps_hidden if irreps_key is None else Irreps(irreps_key)
        _positive_int(num_layers, "num_layers")
        _positive_int(num_heads, "num_heads")
        if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
            raise ValueError(f"lmax must be a non-negative int, got {lmax!r}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.reduce = reduce
        self.irreps_sh = Irreps([(1, (l, (-1) ** l)) for l in range(lmax + 1)])
        silu, tanh, sigmoid = (normalize2mom(f) for f in (torch.nn.functional.silu, torch.tanh, torch.sigmoid))

        self.attentions, self.skips, self.gates = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        irreps = self.irreps_in
        for k in range(num_layers):
            value = Irreps(_live(irreps, self.irreps_sh, self.irreps_hidden))
            present = {ir for mul, ir in irreps if mul > 0}
            key = Irreps([e for e in _live(irreps, self.irreps_sh, self.irreps_key) if e.ir in present])
            if not any(ir == Irrep("0e") for _, ir in value) or key.dim == 0:
                raise ValueError(
                    f"SE3Transformer: block {k} (input {irreps}) reaches values {value} and keys {key}; it needs "
                    f"0e values (for the gates) and at least one key whose irrep the input has")
            scalars = Irreps([(mul, ir) for mul, ir in value if ir.l == 0])
            gated = Irreps([(mul, ir) for mul, ir in value if ir.l > 0])
            gate = Gate(scalars, [silu if ir.p == 1 else tanh for _, ir in scalars],
                        f"{gated.num_irreps}x0e", sigmoid, gated)
            self.attentions.append(EquivariantAttention(
                irreps, gate.irreps_in, key, num_heads, self.irreps_sh, num_basis, cutoff,
                radial_hidden=radial_hidden, irreps_value=value, smooth_cutoff=smooth_cutoff))
            self.skips.append(Linear(irreps, gate.irreps_in, bias=True))  # self-interaction / skip
            self.gates.append(gate)
            irreps = gate.irreps_out
        missing = [str(ir) for mul, ir in self.irreps_out if mul > 0 and ir not in {r for _, r in irreps}]
        if missing:
            raise ValueError(f"SE3Transformer: irreps_out={self.irreps_out} cannot be produced from the last hidden "
                             f"irreps {irreps}: {', '.join(missing)} missing (a Linear readout maps equal irreps only)")
        self.readout = Linear(irreps, self.irreps_out)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor,
                batch: torch.Tensor | None = None, num_graphs: int | None = None) -> torch.Tensor:
        if batch is not None:  # checked first, before any work
            check_pos(pos)
            check_batch(batch, pos.shape[0])
        for attention, skip, gate in zip(self.attentions, self.skips, self.gates):
            x = gate((attention(x, pos, edge_index) + skip(x)) * 2 ** -0.5)  # [N, hidden dim]
        y = self.readout(x)  # [N, irreps_out.dim]
        if batch is None:
            return y
        return pool_graphs(y, batch, num_graphs, self.reduce)  # [num_graphs, irreps_out.dim]
