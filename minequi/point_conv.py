r"""The point convolution of Tensor Field Networks: ``PointConv``.

A tensor field network layer :cite:`thomas2018tensor` updates the irreps
feature of every node ``i`` of a point cloud by a sum over its neighbours ``j``:

.. math::
   x'_i = \frac{1}{\sqrt{\bar n}} \sum_{j \in \mathcal N(i)}
          \Big( W(|r_{ij}|) \otimes Y(\hat r_{ij}) \Big) x_j,
   \qquad r_{ij} = \text{pos}_j - \text{pos}_i,

the paper's point-convolution layer (its filter :math:`F^{(l_f, l_i)}_{c m}(r) =
R^{(l_f, l_i)}_c(|r|)\, Y^{(l_f)}_m(\hat r)` combined with the input by Clebsch-Gordan
coefficients and summed over the points): the filter is a learned radial function
of the edge length times the spherical harmonics :math:`Y^{l_f}` of the edge direction
(:func:`~minequi.spherical_harmonics`), combined with the neighbour's feature
:math:`x_j` through the Clebsch-Gordan tensor product
(:class:`~minequi.TensorProduct`).  :math:`\bar n` is the average number of
neighbours (``avg_num_neighbors``), so that the sum keeps unit variance.

Here, as in NequIP :cite:`batzner2022e3`, the product is *depthwise*
(mode ``"uvu"``): for every path ``(l_in, l_f) -> l_out`` and every channel
``u`` of :math:`x_j` there is one radial weight :math:`R^\text{path}_u(|r_{ij}|)`,

.. math::
   m_{ij, u k} = \alpha \sum_{\text{paths}} R^\text{path}_u(|r_{ij}|)
                 \sum_{ab} C_{abk}\, x_{j, ua}\, Y_b(\hat r_{ij}),

and the radial weights of all paths come from one MLP (no biases, SiLU) of
the edge length expanded in DimeNet's Bessel basis times its smooth polynomial
envelope :cite:`klicpera2020directional` (:class:`~minequi.radial.BesselBasis`,
:class:`~minequi.radial.PolynomialCutoff`), scaled by :math:`\sqrt{c^3/3}` so that
the basis values have mean square about 1 (the functions are orthonormal on the ball
of radius :math:`c`).  The MLP has no biases and
:math:`\text{SiLU}(0) = 0`, so every radial weight is exactly zero beyond the
cutoff and goes to zero there with its first two derivatives: a neighbour
crossing the cutoff changes nothing abruptly.

**Edge convention** (PyTorch Geometric's): ``edge_index [2, E]`` has one column
``(j, i)`` per edge, row 0 the *source* ``j``, row 1 the *target* ``i``; the
message of edge ``j -> i`` is computed from :math:`x_j` and
:math:`r_{ij} = \text{pos}_j - \text{pos}_i` (pointing from the target to the
source) and added into node ``i``.

**Equivariance.** :math:`|r_{ij}|` is invariant under E(3), :math:`r_{ij}` is
invariant under translations and rotates as a ``1o`` vector, so
:math:`Y^l(Q r) = D^{l,(-1)^l}(Q)\, Y^l(r)` for every ``Q`` in O(3) (the harmonics
of degree ``l`` have parity :math:`(-1)^l`).  The tensor product is equivariant
in both inputs, the sum over neighbours does not depend on their order, and
relabelling the nodes relabels the outputs: the layer is equivariant to E(3)
(reflections included) and to permutations of the nodes.

**Fused computation** (:func:`point_convolution`): gather the sources' features,
contract each ``(l_in, l_f)`` pair with its Clebsch-Gordan tensors (one batched
matrix product per pair, :meth:`TensorProduct.contract_pair`), weight each path
by its radial weights while adding it into the messages of its output entry (a
fused multiply-add), and scatter-sum the messages into the targets.  Nothing of
size ``[E, d_out, mul1 * mul2]`` (or ``[E, mul1, d1, d2]``) is ever formed; the
largest per-edge tensors are the gathered features, one ``[E, mul1, mul2, K]``
contraction per pair (``K`` the summed output dimensions of its paths) and the
messages.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .graph import check_edge_index, check_pos, scatter_sum
from .irreps import Irreps
from .radial import BesselBasis, PolynomialCutoff
from .spherical_harmonics import spherical_harmonics
from .tensor_product import TensorProduct

__all__ = ["PointConv", "RadialMLP", "edge_messages", "point_convolution", "uvu_instructions"]


def uvu_instructions(irreps_in, irreps_sh, irreps_out):
    """Every allowed depthwise path ``(i_in, i_sh, i_out, "uvu")`` (``mul_out == mul_in``).

    >>> uvu_instructions("4x0e+4x1o", "0e+1o", "4x0e+4x1o")
    [(0, 0, 0, 'uvu'), (0, 1, 1, 'uvu'), (1, 0, 1, 'uvu'), (1, 1, 0, 'uvu')]
    """
    e1, e2, eo = Irreps(irreps_in), Irreps(irreps_sh), Irreps(irreps_out)
    return [(i1, i2, io, "uvu")
            for i1, (m1, r1) in enumerate(e1) for i2, (_, r2) in enumerate(e2)
            for io, (mo, ro) in enumerate(eo)
            if m1 == mo and r1.p * r2.p == ro.p and abs(r1.l - r2.l) <= ro.l <= r1.l + r2.l]


def edge_messages(tp: TensorProduct, x: torch.Tensor, edge_sh: torch.Tensor, edge_weight: torch.Tensor,
                  edge_index: torch.Tensor) -> torch.Tensor:
    r"""The per-edge messages of :func:`point_convolution`, before the sum over neighbours.

    .. math:: m_e = \text{tp}(x_j, \text{edge\_sh}_e, \text{edge\_weight}_e), \qquad e = (j \to i)

    ``[E, tp.irreps_out.dim]``, equal to ``tp(x[edge_index[0]], edge_sh, edge_weight)`` without
    forming ``[E, d_out, mul1 * mul2]``.  Attention layers
    (:class:`~minequi.EquivariantAttention`) weight these messages before summing them.

    >>> tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", shared_weights=False,
    ...                    instructions=uvu_instructions("2x0e+2x1o", "0e+1o", "2x0e+2x1o"))
    >>> x, sh, w = torch.randn(3, 8), torch.randn(4, 4), torch.randn(4, tp.weight_numel)
    >>> edge_index = torch.tensor([[0, 1, 2, 2], [1, 0, 0, 1]])
    >>> m = edge_messages(tp, x, sh, w, edge_index)
    >>> bool(torch.allclose(m, tp(x[edge_index[0]], sh, w), atol=1e-6))
    True
    """
    if any(p.mode != "uvu" for p in tp.paths):
        raise ValueError("edge_messages needs a TensorProduct whose paths are all 'uvu'")
    src = edge_index[0]  # [E]
    E = src.shape[0]
    # (blocks are taken with split, never by slicing: the backward of a split is one
    # concatenation, where each slice would get its own zero-filled full-size gradient)
    x_j = x[src].split([mul * ir.dim for mul, ir in tp.irreps_in1], dim=1)  # gather: [E, mul1*d1] per entry
    sh = edge_sh.split([mul * ir.dim for mul, ir in tp.irreps_in2], dim=1)  # [E, mul2*d2] per entry
    w = edge_weight.split([p.weight_stop - p.weight_start for p in tp.paths], dim=1)  # [E, U*V] per path
    msg = [None] * len(tp.irreps_out)  # per output entry: the summed messages [E, U, d3]
    for i_out, a, b in tp.uvu_products(x_j, sh, w):  # message of one path = a * b
        m = msg[i_out]
        msg[i_out] = a * b if m is None else torch.addcmul(m, a, b)  # [E, U, d3]
    msg = torch.cat([x.new_zeros(E, mul * ir.dim) if m is None else m.reshape(E, mul * ir.dim)
                     for m, (mul, ir) in zip(msg, tp.irreps_out)], dim=1)  # [E, dim_out]
    return msg  # [E, dim_out]


def point_convolution(tp: TensorProduct, x: torch.Tensor, edge_sh: torch.Tensor, edge_weight: torch.Tensor,
                      edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    r"""Fused gather -> per-edge ``"uvu"`` tensor product -> scatter-sum.

    .. math:: \text{out}_i = \sum_{e = (j \to i)} \text{tp}(x_j, \text{edge\_sh}_e, \text{edge\_weight}_e)

    equal to ``scatter_sum(tp(x[edge_index[0]], edge_sh, edge_weight), edge_index[1], num_nodes)``:
    per ``(i1, i2)`` pair one Clebsch-Gordan contraction (:meth:`TensorProduct.contract_pair`),
    then each path's products are weighted and added into the messages of their output entry
    (one fused multiply-add, :meth:`TensorProduct.uvu_products`), and the messages ``[E, d_out]``
    are scatter-summed into the targets in one ``index_add`` (one call over all output
    entries is several times faster on CPU than one per entry).  No
    ``[E, d_out, mul1 * mul2]`` tensor is formed.

    Args:
        tp: a :class:`TensorProduct` whose paths are all ``"uvu"``.
        x: ``[N, tp.irreps_in1.dim]`` node features.
        edge_sh: ``[E, tp.irreps_in2.dim]`` per-edge second input (the edge harmonics).
        edge_weight: ``[E, tp.weight_numel]`` per-edge weights.
        edge_index: ``[2, E]`` (row 0 source ``j``, row 1 target ``i``), assumed valid.
        num_nodes: ``N``.
    Returns ``[num_nodes, tp.irreps_out.dim]`` in the dtype of ``x``.

    >>> tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", shared_weights=False,
    ...                    instructions=uvu_instructions("2x0e+2x1o", "0e+1o", "2x0e+2x1o"))
    >>> x, sh, w = torch.randn(3, 8), torch.randn(4, 4), torch.randn(4, tp.weight_numel)
    >>> edge_index = torch.tensor([[0, 1, 2, 2], [1, 0, 0, 1]])
    >>> y = point_convolution(tp, x, sh, w, edge_index, 3)
    >>> unfused = scatter_sum(tp(x[edge_index[0]], sh, w), edge_index[1], 3)
    >>> bool(torch.allclose(y, unfused, atol=1e-6))
    True
    """
    if any(p.mode != "uvu" for p in tp.paths):
        raise ValueError("point_convolution needs a TensorProduct whose paths are all 'uvu'")
    msg = edge_messages(tp, x, edge_sh, edge_weight, edge_index)  # [E, dim_out]
    return scatter_sum(msg, edge_index[1], num_nodes)  # [N, dim_out]  scatter into the targets (one index_add)


def _scaled(x, f, c):
    return c * f(x)


def normalize2mom(f):
    r"""``c f`` with ``c`` such that :math:`E[(c f(z))^2] = 1` for :math:`z \sim N(0, 1)` (e3nn's
    ``normalize2mom``; 100-point Gauss-Hermite quadrature).  Odd or even ``f`` stay odd or even.

    >>> silu = normalize2mom(torch.nn.functional.silu)
    >>> round(silu.keywords["c"], 4)
    1.6765
    """
    z, w = np.polynomial.hermite_e.hermegauss(100)  # nodes and weights for the weight exp(-z^2 / 2)
    m2 = float((w / w.sum() * f(torch.as_tensor(z)).numpy() ** 2).sum())
    return functools.partial(_scaled, f=f, c=m2 ** -0.5)


class RadialMLP(nn.Module):
    r"""``[..., num_basis] -> [..., num_out]``: linear layers without bias, SiLU in between.

    Weights are drawn from :math:`N(0, 1)` and each layer divides by :math:`\sqrt{\text{fan\_in}}`,
    and the SiLU is scaled to unit second moment (:func:`normalize2mom`), as in e3nn's
    ``FullyConnectedNet``: unit-variance inputs give unit-variance outputs.  Without
    biases and with :math:`\text{SiLU}(0) = 0`, ``RadialMLP(0) = 0``.

    >>> mlp = RadialMLP(8, [16], 5)
    >>> mlp(torch.zeros(3, 8)).abs().max().item(), mlp(torch.randn(3, 8)).shape
    (0.0, torch.Size([3, 5]))
    """

    def __init__(self, num_basis: int, hidden: Sequence[int], num_out: int):
        super().__init__()
        sizes = [num_basis, *hidden, num_out]
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(a, b)) for a, b in zip(sizes[:-1], sizes[1:])])
        self.act = normalize2mom(torch.nn.functional.silu)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for k, W in enumerate(self.weights):
            if k > 0:
                h = self.act(h)
            h = h @ (W / math.sqrt(W.shape[0]))  # [..., fan_out]
        return h


def _irreps_sh(irreps_sh):
    irreps_sh = Irreps(irreps_sh)
    for mul, ir in irreps_sh:
        if mul != 1 or ir.p != (-1) ** ir.l:
            raise ValueError(
                f"irreps_sh must hold each degree once with the parity of the spherical harmonics, "
                f"(-1)^l (e.g. '0e+1o+2e'), got {irreps_sh}")
    if len(set(irreps_sh.ls)) != len(irreps_sh):
        raise ValueError(f"irreps_sh must not repeat a degree, got {irreps_sh}")
    return irreps_sh


def check_graph_inputs(name: str, irreps_in, param: torch.Tensor, x, pos, edge_index, edge_vec=None):
    """The input checks of a point-cloud layer (``PointConv``, ``EquivariantAttention``); returns ``edge_vec [E, 3]``.

    ``x [N, irreps_in.dim]`` and ``pos [N, 3]`` must agree on ``N`` and, with ``param`` (one of the
    module's parameters), on dtype and device; ``edge_index [2, E]`` must index ``N`` nodes;
    ``edge_vec`` defaults to :math:`r_{ij}` = ``pos[j] - pos[i]`` and is checked to be ``[E, 3]`` otherwise.
    """
    check_pos(pos)
    N = pos.shape[0]
    irreps_in.check_features(x, "x", "irreps_in")
    if x.dim() != 2 or x.shape[0] != N:
        raise ValueError(f"x must have shape [N, {irreps_in.dim}] with N = pos.shape[0] = {N}, got {tuple(x.shape)}")
    check_edge_index(edge_index, N)
    if not x.dtype == pos.dtype == param.dtype or not x.device == pos.device == param.device:
        raise TypeError(
            f"{name}: x is {x.dtype} on {x.device}, pos is {pos.dtype} on {pos.device} and the parameters "
            f"are {param.dtype} on {param.device}; a module's parameters must match its input (use .to(...) on one)")
    E = edge_index.shape[1]
    if edge_vec is None:
        return pos[edge_index[0]] - pos[edge_index[1]]  # [E, 3]  r_ij = pos_j - pos_i (messages flow j -> i)
    if not isinstance(edge_vec, torch.Tensor) or edge_vec.shape != (E, 3) \
            or edge_vec.dtype != pos.dtype or edge_vec.device != pos.device:
        raise ValueError(f"edge_vec must be a [E, 3] = [{E}, 3] tensor of pos's dtype and device, "
                         f"got {getattr(edge_vec, 'shape', type(edge_vec).__name__)}")
    return edge_vec


class PointConv(nn.Module):
    r"""Tensor-field-network point convolution (depthwise ``"uvu"`` tensor product, fused).

    See the module docstring for the formula, the edge convention and the
    equivariance argument.

    Args:
        irreps_in: irreps of the node features ``x``.
        irreps_sh: degrees of the edge harmonics, each once with parity ``(-1)^l``,
            e.g. ``"0e+1o+2e"``.
        irreps_out: irreps of the output; every entry must be reachable by a ``"uvu"``
            path, i.e. an input entry of the same multiplicity and a harmonic with
            :math:`|l_1 - l_2| \le l_3 \le l_1 + l_2` and :math:`p_1 (-1)^{l_2} = p_3`.
        num_basis: number of Bessel functions of the edge length.
        cutoff: radius beyond which an edge contributes exactly zero.
        radial_hidden: hidden layer sizes of the radial MLP (an int or a list).
        avg_num_neighbors: :math:`\bar n`; the sum over neighbours is divided by its square root.
        envelope_p: exponent ``p`` of the polynomial envelope.

    Shapes: ``x [N, irreps_in.dim]``, ``pos [N, 3]``, ``edge_index [2, E]`` (integer)
    -> ``[N, irreps_out.dim]``.  ``x``, ``pos`` and the parameters must share one dtype
    and device (else ``TypeError``; use ``.double()``, ``.to(...)``).  ``E = 0`` and
    ``N = 0`` are allowed.

    >>> conv = PointConv("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", num_basis=4, cutoff=2.0)
    >>> conv.tp.weight_numel, len(conv.tp.paths)
    (28, 7)
    >>> pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 1.5, 0]])
    >>> edge_index = torch.tensor([[1, 0, 2], [0, 1, 0]])   # 1 -> 0, 0 -> 1, 2 -> 0
    >>> conv(torch.randn(3, 16), pos, edge_index).shape
    torch.Size([3, 36])
    >>> conv(torch.randn(3, 16), pos, torch.tensor([[0], [3]]))
    Traceback (most recent call last):
    ...
    ValueError: edge_index has entries in [0, 3] but must lie in [0, num_nodes) = [0, 3)
    """

    def __init__(self, irreps_in, irreps_sh, irreps_out, num_basis: int = 8, cutoff: float = 5.0,
                 radial_hidden: int | Sequence[int] = 16, avg_num_neighbors: float = 1.0, envelope_p: int = 6):
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_sh = _irreps_sh(irreps_sh)
        self.irreps_out = Irreps(irreps_out)
        if isinstance(avg_num_neighbors, bool) or not isinstance(avg_num_neighbors, (int, float)) \
                or not 0 < avg_num_neighbors < math.inf:
            raise ValueError(f"avg_num_neighbors must be a positive number, got {avg_num_neighbors!r}")
        self.avg_num_neighbors = float(avg_num_neighbors)
        instructions = uvu_instructions(self.irreps_in, self.irreps_sh, self.irreps_out)
        unreached = [f"{mul}x{ir}" for io, (mul, ir) in enumerate(self.irreps_out)
                     if mul > 0 and not any(ins[2] == io for ins in instructions)]
        if unreached:
            raise ValueError(
                f"PointConv: irreps_out entries {', '.join(unreached)} are reached by no 'uvu' path from "
                f"irreps_in={self.irreps_in} x irreps_sh={self.irreps_sh} (a path needs an input entry with "
                f"the same multiplicity and the selection rules |l1-l2| <= l3 <= l1+l2, p1*p2 = p3)")
        self.tp = TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_out, instructions=instructions,
                                shared_weights=False)
        self.basis = BesselBasis(num_basis, cutoff)
        # the Bessel functions are orthonormal on the ball (int_0^c e_n^2 r^2 dr = 1), so for
        # neighbours spread uniformly in the ball each has mean square 3 / c^3: rescale to 1
        self.basis_scale = math.sqrt(self.basis.cutoff ** 3 / 3)
        self.envelope = PolynomialCutoff(cutoff, envelope_p)
        hidden = [radial_hidden] if isinstance(radial_hidden, int) else list(radial_hidden)
        self.radial = RadialMLP(num_basis, hidden, self.tp.weight_numel)

    def extra_repr(self):
        return (f"{self.irreps_in} x {self.irreps_sh} -> {self.irreps_out}, weight_numel={self.tp.weight_numel} "
                f"per edge, cutoff={self.basis.cutoff}, avg_num_neighbors={self.avg_num_neighbors}")

    def edge_embedding(self, edge_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(edge_sh [E, irreps_sh.dim], edge_weight [E, tp.weight_numel])`` of the edge vectors
        ``edge_vec [E, 3]`` (:math:`r_{ij}`): the harmonics of the direction and the radial MLP of the
        length (exactly zero beyond the cutoff)."""
        r = torch.linalg.vector_norm(edge_vec, dim=1)  # [E]
        edge_sh = spherical_harmonics(self.irreps_sh.ls, edge_vec, normalize=True)  # [E, sh_dim]
        emb = self.basis(r) * (self.envelope(r) * self.basis_scale)[:, None]  # [E, num_basis]  0 beyond the cutoff
        return edge_sh, self.radial(emb)  # [E, sh_dim], [E, weight_numel]

    def forward(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor,
                edge_vec: torch.Tensor | None = None) -> torch.Tensor:
        """``edge_vec [E, 3]``, optional: the edge vectors :math:`r_{ij}` when they are not
        ``pos[j] - pos[i]``, e.g. ``pos[j] - pos[i] + shifts @ cell`` across periodic
        boundaries (:func:`~minequi.neighbor_list`); ``pos`` then only sets ``N``, dtype and device."""
        edge_vec = check_graph_inputs("PointConv", self.irreps_in, self.radial.weights[0], x, pos, edge_index,
                                      edge_vec)  # [E, 3]
        edge_sh, edge_weight = self.edge_embedding(edge_vec)  # [E, sh_dim], [E, weight_numel]
        out = point_convolution(self.tp, x, edge_sh, edge_weight, edge_index, pos.shape[0])  # [N, dim_out]
        return out / math.sqrt(self.avg_num_neighbors)  # [N, dim_out]
