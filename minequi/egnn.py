r"""E(n)-equivariant graph neural networks (EGNN; Satorras, Hoogeboom & Welling, 2021).

Each node carries invariant features :math:`h_i` and a position :math:`x_i`.  One
layer (the paper's *equivariant graph convolutional layer*, eqs. 3-6) computes,
for every edge ``j -> i`` of ``edge_index`` (row 0 = source j, row 1 = target i):

.. math::
    m_{ij} &= \phi_e\big(h_i, h_j, \|x_i - x_j\|^2, a_{ij}\big)              && \text{(eq. 3)} \\
    x_i'   &= x_i + C \sum_{j} (x_i - x_j)\, \phi_x(m_{ij})                  && \text{(eq. 4)} \\
    m_i    &= \sum_{j} m_{ij}                                               && \text{(eq. 5)} \\
    h_i'   &= \phi_h(h_i, m_i)                                              && \text{(eq. 6)}

and, in the velocity variant (eq. 7), with the initial velocities :math:`v_i`,

.. math:: v_i' = \phi_v(h_i)\, v_i + C \sum_{j} (x_i - x_j)\, \phi_x(m_{ij}), \qquad x_i' = x_i + v_i'.

**Why it is E(n)-equivariant.**  Under :math:`x \mapsto Q x + t` (``Q``
orthogonal, reflections included) the squared distance is invariant,
:math:`\|Qx_i + t - Qx_j - t\|^2 = \|x_i - x_j\|^2`, so every :math:`m_{ij}`, every
:math:`m_i` and every :math:`h_i'` is invariant; the relative vector
:math:`x_i - x_j` becomes :math:`Q(x_i - x_j)` (``t`` cancels), so the sum in
eq. 4 is multiplied by ``Q``, and :math:`x_i' \mapsto Q x_i' + t`.  Velocities
transform like differences of positions (``v -> Q v``), and :math:`\phi_v(h_i)`
is invariant.  Permuting the nodes permutes the edges; sums over ``j`` do not
see the order, so the layer is permutation-equivariant as well.

**Options of the reference implementation** (``vgsatorras/egnn``, ``E_GCL``),
with the same defaults:

* ``residual=True``: :math:`h_i' = h_i + \phi_h(h_i, m_i)` (only when
  ``in_features == out_features``; ``None`` = automatic);
* ``attention=False``: gate each message, :math:`m_{ij} \leftarrow m_{ij}\,\sigma(w^\top m_{ij} + b)`;
* ``normalize=False``: use :math:`(x_i - x_j) / \|x_i - x_j\|` in eq. 4 (helps
  stability);
* ``tanh=False``: bound the coordinate weight, :math:`\tanh(\phi_x(m_{ij}))`;
* ``coords_agg="mean"``: :math:`C = 1/\deg(i)` (the paper's :math:`1/(M-1)` on
  a complete graph); ``"sum"``: :math:`C = 1`.
* ``act=nn.SiLU``; :math:`\phi_e, \phi_h, \phi_x, \phi_v` are two-layer MLPs of width
  ``hidden_features``; the last layer of :math:`\phi_x` has no bias and starts
  tiny (Xavier, gain 0.001), so coordinates move little at initialisation.

Two deliberate differences: the reference normalises with
``diff / (|diff|.detach() + 1e-8)``; here the norm is differentiated (correct
gradients, e.g. for forces) and computed as :math:`\sqrt{\|d\|^2 + \epsilon^2}`,
smooth at :math:`d = 0` (self-loops) and within :math:`\epsilon` of the reference.
And by default (``first_linear="split"``) the first linear map of :math:`\phi_e`
is applied to the *nodes* before gathering
(:math:`W [h_i, h_j, d^2, a] = W_1 h_i + W_2 h_j + w_3 d^2 + W_4 a`): the same
function with ``O(N F H)`` instead of ``O(E F H)`` multiply-adds, at the price of
gathering ``2 H`` instead of ``2 F + 1`` numbers per edge (``"concat"`` does the
latter, as the reference code; it can win when memory traffic, not arithmetic, limits).
The two gathers, their sum and the :math:`w_3 d^2 + W_4 a` term are one fused pass
(:class:`_GatherSum`, an ``embedding_bag`` sum), and a last Linear with one output is a
matrix-vector product: with both, a forward + backward on 32 complete graphs of 64 nodes
takes 0.81-0.84x the time of egnn-pytorch's dense broadcast form (``benchmarks/bench_egnn.py``).

Parameters stay in their dtype; they are cast to the input's dtype at each call,
so outputs have the input's dtype and device.

>>> import torch
>>> from minequi.graph import radius_graph
>>> _ = torch.manual_seed(0)
>>> x = torch.randn(6, 3)
>>> h = torch.randn(6, 4)
>>> edge_index = radius_graph(x, cutoff=2.0)
>>> layer = EGNNLayer(4, 8, hidden_features=16)
>>> h2, x2 = layer(h, x, edge_index)
>>> h2.shape, x2.shape
(torch.Size([6, 8]), torch.Size([6, 3]))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .graph import check_batch, check_edge_index, check_pos, pool_graphs, scatter_mean, scatter_sum

__all__ = ["EGNNLayer", "EGNN"]


def _mlp(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Apply a Sequential of Linear / activation layers with the Linear weights cast to x's dtype."""
    for layer in layers:
        if isinstance(layer, nn.Linear) and layer.out_features == 1:
            # a matrix-vector product: its backward is an outer product, not a rank-1 matmul (~25% faster)
            x = (x @ layer.weight[0].to(x.dtype)).unsqueeze(-1)  # [..., 1]
            if layer.bias is not None:
                x = x + layer.bias.to(x.dtype)  # [..., 1]
        elif isinstance(layer, nn.Linear):
            bias = None if layer.bias is None else layer.bias.to(x.dtype)
            x = F.linear(x, layer.weight.to(x.dtype), bias)  # [..., out]
        else:
            x = layer(x)
    return x


class _GatherSum(torch.autograd.Function):
    r"""``out[e] = P[i_e] + Q[j_e] + a_e W`` for every edge ``e``, in one pass.

    ``P [N, H]``, ``Q [N, H]`` (node tables), ``W [A, H]``, ``a [E, A]`` (per-edge inputs), ``i, j [E]``.
    The forward is an ``embedding_bag`` sum over one table ``[P; Q; W]``: edge ``e`` is the bag
    ``{i_e, N + j_e, 2N, ..., 2N + A - 1}`` with weights ``{1, 1, a_e}``.  Two ``index_select`` of
    ``[E, H]`` tensors, their sum and a rank-``A`` update become one fused gather (2-4x faster on CPU
    at E = 131,072, H = 130).  The backward is written with ``index_add`` and ``mm`` (differentiable,
    so forces can be trained through it): ``dP = sum_{e: i_e = n} g_e``, ``dQ`` likewise over ``j``,
    ``dW = a^T g``, ``da = g W^T``.
    """

    @staticmethod
    def forward(ctx, P, Q, W, a, i, j):
        N, E, A = P.shape[0], i.shape[0], W.shape[0]
        ctx.save_for_backward(W, a, i, j)
        ctx.num_nodes = N
        table = torch.cat([P, Q, W])  # [2N + A, H]
        rows = torch.arange(2 * N, 2 * N + A, device=i.device).expand(E, A)  # [E, A] rows of W
        bags = torch.cat([i[:, None], j[:, None] + N, rows], dim=1)  # [E, 2 + A]
        weights = torch.cat([a.new_ones(E, 2), a], dim=1)  # [E, 2 + A]
        return F.embedding_bag(bags, table, per_sample_weights=weights, mode="sum")  # [E, H]

    @staticmethod
    def backward(ctx, g):  # g [E, H]
        W, a, i, j = ctx.saved_tensors
        zeros = g.new_zeros(ctx.num_nodes, g.shape[1])  # [N, H]
        dP = zeros.index_add(0, i, g)  # [N, H]
        dQ = zeros.index_add(0, j, g)  # [N, H]
        return dP, dQ, a.T @ g, g @ W.T, None, None  # [N, H], [N, H], [A, H], [E, A]


def _check_features(h, num_features: int, name: str = "h") -> None:
    if not torch.is_tensor(h):
        raise TypeError(f"{name} must be a torch.Tensor [N, {num_features}], got {type(h).__name__}")
    if not h.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor [N, {num_features}], got dtype {h.dtype}")
    if h.dim() != 2 or h.shape[1] != num_features:
        raise ValueError(f"{name} must have shape [N, {num_features}], got {list(h.shape)}")


def _check_inputs(h, x, edge_index, edge_attr, v, in_features, edge_features, velocity, validate):
    """Shape/dtype checks shared by EGNNLayer and EGNN (value checks: one host sync, see graph.py)."""
    _check_features(h, in_features, "h")
    check_pos(x, "x")
    N = h.shape[0]
    if x.shape[0] != N:
        raise ValueError(f"x must have shape [N, 3] with N = {N} (the rows of h), got {list(x.shape)}")
    if x.dtype != h.dtype:
        raise TypeError(f"h and x must have the same dtype, got {h.dtype} and {x.dtype}")
    check_edge_index(edge_index, N, validate=validate)
    E = edge_index.shape[1]
    if edge_features > 0:
        if edge_attr is None:
            raise ValueError(f"edge_attr [E, {edge_features}] is required (edge_features={edge_features})")
        _check_features(edge_attr, edge_features, "edge_attr")
        if edge_attr.shape[0] != E:
            raise ValueError(f"edge_attr must have shape [E, {edge_features}] with E = {E}, got {list(edge_attr.shape)}")
    elif edge_attr is not None:
        raise ValueError("edge_attr was given but the layer was built with edge_features=0")
    if velocity:
        if v is None:
            raise ValueError("v [N, 3] is required: the layer was built with velocity=True (eq. 7)")
        check_pos(v, "v")
        if v.shape[0] != N:
            raise ValueError(f"v must have shape [N, 3] with N = {N}, got {list(v.shape)}")
    elif v is not None:
        raise ValueError("v was given but the layer was built with velocity=False; use velocity=True for eq. 7")


class EGNNLayer(nn.Module):
    r"""One E(n)-equivariant graph convolutional layer, eqs. 3-6 (and eq. 7 with ``velocity=True``).

    ``forward(h [N, in_features], x [N, 3], edge_index [2, E], edge_attr [E, edge_features] = None,
    v [N, 3] = None) -> (h' [N, out_features], x' [N, 3])``, or ``(h', x', v')`` with velocities.
    The options and their defaults are those of the reference implementation
    (see :mod:`minequi.egnn`).  ``first_linear`` ("split" or "concat") only chooses how
    the first Linear of :math:`\phi_e` is evaluated (same result).  ``validate=False`` skips the value check of
    ``edge_index`` (a host sync); it is skipped anyway under ``torch.compile``.

    >>> layer = EGNNLayer(3, 3, hidden_features=8, velocity=True)
    >>> h, x, v = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    >>> ei = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    >>> [t.shape[1] for t in layer(h, x, ei, v=v)]
    [3, 3, 3]
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int,
        edge_features: int = 0,
        *,
        act=nn.SiLU,
        residual: bool | None = None,
        attention: bool = False,
        normalize: bool = False,
        tanh: bool = False,
        coords_agg: str = "mean",
        velocity: bool = False,
        eps: float = 1e-8,
        first_linear: str = "split",
        validate: bool = True,
    ):
        super().__init__()
        for name, n, low in [("in_features", in_features, 1), ("out_features", out_features, 1),
                             ("hidden_features", hidden_features, 1), ("edge_features", edge_features, 0)]:
            if isinstance(n, bool) or not isinstance(n, int) or n < low:
                raise ValueError(f"{name} must be an int >= {low}, got {n!r}")
        if coords_agg not in ("mean", "sum"):
            raise ValueError(f"coords_agg must be 'mean' or 'sum', got {coords_agg!r}")
        if first_linear not in ("split", "concat"):
            raise ValueError(f"first_linear must be 'split' or 'concat', got {first_linear!r}")
        if residual is None:
            residual = in_features == out_features
        if residual and in_features != out_features:
            raise ValueError(f"residual=True needs in_features == out_features, got {in_features} and {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.hidden_features, self.edge_features = hidden_features, edge_features
        self.residual, self.attention, self.normalize, self.tanh = residual, attention, normalize, tanh
        self.coords_agg, self.velocity, self.eps, self.validate = coords_agg, velocity, eps, validate
        self.first_linear = first_linear
        H = hidden_features

        # phi_e (eq. 3): [h_i, h_j, |x_i - x_j|^2, a_ij] -> m_ij
        self.phi_e = nn.Sequential(nn.Linear(2 * in_features + 1 + edge_features, H), act(), nn.Linear(H, H), act())
        # phi_x (eq. 4): m_ij -> one scalar weight of x_i - x_j; the last layer starts tiny
        last = nn.Linear(H, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.phi_x = nn.Sequential(nn.Linear(H, H), act(), last)
        # phi_h (eq. 6): [h_i, m_i] -> h_i'
        self.phi_h = nn.Sequential(nn.Linear(in_features + H, H), act(), nn.Linear(H, out_features))
        if attention:  # soft edge gate sigma(w . m_ij + b)
            self.phi_att = nn.Sequential(nn.Linear(H, 1), nn.Sigmoid())
        if velocity:  # phi_v (eq. 7): h_i -> scale of the velocity
            self.phi_v = nn.Sequential(nn.Linear(in_features, H), act(), nn.Linear(H, 1))

    def forward(self, h, x, edge_index, edge_attr=None, v=None):
        _check_inputs(h, x, edge_index, edge_attr, v, self.in_features, self.edge_features,
                      self.velocity, self.validate)
        return self._forward_unchecked(h, x, edge_index, edge_attr, v)

    def _forward_unchecked(self, h, x, edge_index, edge_attr=None, v=None):
        N, Fin = h.shape[0], self.in_features
        j, i = edge_index[0], edge_index[1]  # [E], [E] source, target
        diff = x.index_select(0, i) - x.index_select(0, j)  # [E, 3] x_i - x_j
        d2 = diff.square().sum(dim=-1, keepdim=True)  # [E, 1] |x_i - x_j|^2

        # eq. 3, m_ij = phi_e(h_i, h_j, d2, a_ij): the first Linear of phi_e, one of two equal ways
        first = self.phi_e[0]
        W, b = first.weight.to(h.dtype), first.bias.to(h.dtype)  # [H', 2 Fin + 1 + A], [H']
        if self.first_linear == "split":
            # W [h_i, h_j, d2, a] + b = (W_1 h + b)_i + (W_2 h)_j + w_3 d2 + W_4 a, W_1 h and W_2 h per node
            node_i = F.linear(h, W[:, :Fin], b)  # [N, H']
            node_j = F.linear(h, W[:, Fin:2 * Fin])  # [N, H']
            edge_in = d2 if self.edge_features == 0 else torch.cat([d2, edge_attr], dim=-1)  # [E, 1 + A]
            pre = _GatherSum.apply(node_i, node_j, W[:, 2 * Fin:].T, edge_in, i, j)  # [E, H'] one fused gather
        else:
            parts = [h.index_select(0, i), h.index_select(0, j), d2]  # [E, Fin], [E, Fin], [E, 1]
            if self.edge_features > 0:
                parts.append(edge_attr)  # [E, A]
            pre = F.linear(torch.cat(parts, dim=-1), W, b)  # [E, H']
        m = _mlp(self.phi_e[1:], pre)  # [E, H]
        if self.attention:
            m = m * _mlp(self.phi_att, m)  # [E, H] gated messages

        # eq. 4 (or 7): x_i' = x_i + C sum_j (x_i - x_j) phi_x(m_ij)
        if self.normalize:
            diff = diff / torch.sqrt(d2 + self.eps * self.eps)  # [E, 3] unit vectors (0 on self-loops)
        w = _mlp(self.phi_x, m)  # [E, 1]
        if self.tanh:
            w = torch.tanh(w)  # [E, 1]
        aggregate = scatter_mean if self.coords_agg == "mean" else scatter_sum
        shift = aggregate(diff * w, i, N)  # [N, 3]

        # eqs. 5-6: m_i = sum_j m_ij; h_i' = phi_h(h_i, m_i) (+ h_i)
        m_i = scatter_sum(m, i, N)  # [N, H]
        h_out = _mlp(self.phi_h, torch.cat([h, m_i], dim=-1))  # [N, out]
        if self.residual:
            h_out = h + h_out  # [N, out]

        if self.velocity:
            v_out = _mlp(self.phi_v, h) * v + shift  # [N, 3] eq. 7
            return h_out, x + v_out, v_out
        return h_out, x + shift

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, hidden={self.hidden_features}, "
                f"edge_features={self.edge_features}, residual={self.residual}, attention={self.attention}, "
                f"normalize={self.normalize}, tanh={self.tanh}, coords_agg={self.coords_agg!r}, "
                f"velocity={self.velocity}")


class EGNN(nn.Module):
    r"""A stack of :class:`EGNNLayer` with an input embedding and an invariant readout.

    ``h -> Linear(in, hidden) -> num_layers x EGNNLayer(hidden, hidden, hidden) -> MLP(hidden, hidden, out)``,
    as ``EGNN`` of the reference implementation (with a two-layer readout).  The
    readout acts on the invariant features only, so it is E(n)-invariant per node;
    with ``pool="sum"`` or ``"mean"`` the per-node outputs are pooled per graph
    (``batch [N]``; ``None`` = one graph), which is also permutation-invariant.

    ``forward(h [N, in], x [N, 3], edge_index [2, E], edge_attr=None, v=None, batch=None,
    num_graphs=None) -> (y, x' [N, 3])`` (``+ v'`` with ``velocity=True``), where
    ``y`` is ``[N, out]`` without pooling and ``[num_graphs, out]`` with it.
    In the velocity variant every layer gets the *initial* velocities (eq. 7,
    :math:`v_i^\text{init}`), as in the paper's n-body model.  ``num_graphs``
    defaults to ``batch.max() + 1`` (a host sync; pass it to avoid one).

    >>> model = EGNN(in_features=2, hidden_features=16, out_features=1, num_layers=2, pool="sum")
    >>> h, x = torch.randn(7, 2), torch.randn(7, 3)
    >>> batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    >>> from minequi.graph import radius_graph
    >>> y, x2 = model(h, x, radius_graph(x, 3.0, batch), batch=batch)
    >>> y.shape, x2.shape
    (torch.Size([2, 1]), torch.Size([7, 3]))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        num_layers: int = 4,
        edge_features: int = 0,
        *,
        pool: str | None = None,
        act=nn.SiLU,
        velocity: bool = False,
        validate: bool = True,
        **layer_options,
    ):
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if pool not in (None, "sum", "mean"):
            raise ValueError(f"pool must be None, 'sum' or 'mean', got {pool!r}")
        self.in_features, self.hidden_features, self.out_features = in_features, hidden_features, out_features
        self.edge_features, self.pool, self.velocity, self.validate = edge_features, pool, velocity, validate
        self.embedding = nn.Linear(in_features, hidden_features)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden_features, hidden_features, hidden_features, edge_features,
                      act=act, velocity=velocity, validate=False, **layer_options)
            for _ in range(num_layers)
        )
        self.readout = nn.Sequential(nn.Linear(hidden_features, hidden_features), act(),
                                     nn.Linear(hidden_features, out_features))

    def forward(self, h, x, edge_index, edge_attr=None, v=None, batch=None, num_graphs=None):
        _check_inputs(h, x, edge_index, edge_attr, v, self.in_features, self.edge_features,
                      self.velocity, self.validate)
        N = h.shape[0]
        if batch is not None:
            check_batch(batch, N, validate=self.validate)
        h = _mlp([self.embedding], h)  # [N, hidden]
        v_out = None
        for layer in self.layers:
            if self.velocity:
                h, x, v_out = layer._forward_unchecked(h, x, edge_index, edge_attr, v)  # v: initial velocities
            else:
                h, x = layer._forward_unchecked(h, x, edge_index, edge_attr)  # [N, hidden], [N, 3]
        y = _mlp(self.readout, h)  # [N, out] invariant per node
        if self.pool is not None:
            if batch is None:
                batch = torch.zeros(N, dtype=torch.int64, device=h.device)  # [N]
                num_graphs = 1 if num_graphs is None else num_graphs
            y = pool_graphs(y, batch, num_graphs, self.pool, validate=self.validate)  # [num_graphs, out]
        return (y, x, v_out) if self.velocity else (y, x)
