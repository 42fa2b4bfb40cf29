r"""The equivariant product of two irreps features: ``TensorProduct``.

Two features ``x1`` (irreps ``irreps_in1``) and ``x2`` (irreps ``irreps_in2``)
are multiplied irrep by irrep.  For a copy ``u`` of irrep ``(l1, p1)`` in
``x1`` and a copy ``v`` of ``(l2, p2)`` in ``x2``, the Clebsch-Gordan tensor
``C = clebsch_gordan(l1, l2, l3)`` turns the ``(2l1+1)(2l2+1)`` products of
their components into an ``(l3, p1 p2)`` feature

.. math:: z_k = \sum_{ij} C_{ijk}\, x_{1,ui}\, x_{2,vj},

which is equivariant because :math:`(D^{l_1} \otimes D^{l_2}) C = C D^{l_3}`
(see :mod:`minequi.conventions`).  A *path* ``(i1, i2) -> i_out`` connects
the ``i1``-th entry ``mul1 x (l1, p1)`` of ``irreps_in1``, the ``i2``-th entry
``mul2 x (l2, p2)`` of ``irreps_in2`` and the ``i_out``-th entry
``mul_out x (l3, p3)`` of ``irreps_out``; it is *allowed* when

* :math:`|l_1 - l_2| \le l_3 \le l_1 + l_2` (otherwise ``C = 0``), and
* :math:`p_1 p_2 = p_3` (parity of a product).

The module is *fully connected*, like e3nn's ``FullyConnectedTensorProduct``
and the tensor field network layer :cite:`thomas2018tensor`: it uses every
allowed path, with one learnable weight per multiplicity triple ``(u, v, w)``:

.. math::
   \text{out}_{i_\text{out}, w k} = \sum_{\text{paths into } i_\text{out}} \alpha_\text{path}
   \sum_{u v} W^\text{path}_{u v w} \sum_{ij} C_{ijk}\, x_{1, ui}\, x_{2, vj}.

Normalisation
-------------
``C`` has orthonormal columns, so if the components of ``x1`` and ``x2`` are
independent with variance 1 ("component" normalisation) each ``z_k`` has
variance :math:`\sum_{ij} C_{ijk}^2 = 1`.  With weights drawn from
:math:`N(0, 1)`, an output component is a sum of ``fan_in`` such unit-variance
terms, ``fan_in = sum over the paths into i_out of mul1 * mul2``, so

* ``path_normalization="element"`` (default, e3nn's default):
  :math:`\alpha = 1/\sqrt{\text{fan\_in}}` and every output component has variance 1;
* ``"path"``: :math:`\alpha = 1/\sqrt{n_\text{paths} \cdot \text{mul1}\, \text{mul2}}`
  (each path contributes the same variance, the total is still 1);
* ``"none"``: :math:`\alpha = 1`.

Output entries that no path reaches are zero.  A tensor product with no
allowed path at all raises ``ValueError`` (it would always output zeros).

Weights
-------
``weight_numel = sum over paths of mul1 * mul2 * mul_out``; the weight vector
is the concatenation of the paths' ``[mul1, mul2, mul_out]`` blocks, paths
ordered by ``i_out``, then ``i1``, then ``i2`` (see :attr:`TensorProduct.paths`).
Call as ``tp(x1, x2)`` with the module's own (internal) weights, or
``tp(x1, x2, weight)`` with ``weight`` of shape ``[weight_numel]`` (one set
shared by the batch) or ``[..., weight_numel]`` (one set per sample, e.g. per
edge of a graph, broadcast against the batch shape of ``x1`` and ``x2``).

Computation
-----------
With shared weights the batch index is moved last, so that each contraction is
one large matrix product: for each pair ``(i1, i2)`` the outer product of the
two blocks is contracted with the Clebsch-Gordan tensors of all the pair's
paths at once (concatenated along ``k``), then each output entry is a sum of
``W^T @ s`` products.  With per-sample weights the batch index stays first and
the contractions are batched matrix products.  The path normalisation is folded
into the stored Clebsch-Gordan tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .clebsch_gordan import clebsch_gordan
from .irreps import Irreps

__all__ = ["Path", "TensorProduct"]


@dataclass(frozen=True)
class Path:
    """One path ``(i_in1, i_in2) -> i_out`` of a :class:`TensorProduct`.

    ``weight_start:weight_stop`` is its block of the weight vector, read as
    ``[mul_in1, mul_in2, mul_out]``; ``alpha`` is its normalisation constant.
    """

    i_in1: int
    i_in2: int
    i_out: int
    l1: int
    l2: int
    l3: int
    mul_in1: int
    mul_in2: int
    mul_out: int
    weight_start: int
    weight_stop: int
    alpha: float


def _entries(irreps):
    """``[(mul, l, p, start, stop)]`` for each entry of ``irreps``."""
    out, start = [], 0
    for mul, ir in irreps:
        d = mul * (2 * ir.l + 1)
        out.append((mul, ir.l, ir.p, start, start + d))
        start += d
    return out


def _as_irreps(x, name):
    try:
        return Irreps(x)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: {e}") from None


class TensorProduct(nn.Module):
    r"""Fully connected, equivariant tensor product ``irreps_in1 x irreps_in2 -> irreps_out``.

    See the module docstring for the formula, the normalisation and the weight layout.

    Args:
        irreps_in1, irreps_in2, irreps_out: ``Irreps`` or strings such as ``"16x0e+8x1o"``.
        shared_weights: one weight vector for the whole batch (``True``) or one per
            sample (``False``; then the weights must be passed at call time).
        internal_weights: hold the weights as a parameter (default: ``shared_weights``).
        path_normalization: ``"element"`` (default), ``"path"`` or ``"none"``.

    Shapes: ``x1 [..., irreps_in1.dim]``, ``x2 [..., irreps_in2.dim]`` (batch shapes
    broadcast), optional ``weight [weight_numel]`` or ``[..., weight_numel]``;
    output ``[..., irreps_out.dim]``.

    >>> tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+1o+1e")
    >>> tp.weight_numel, len(tp.paths)
    (14, 5)
    >>> tp(torch.randn(5, 8), torch.randn(5, 4)).shape
    torch.Size([5, 8])
    >>> TensorProduct("1o", "1o", "1o")
    Traceback (most recent call last):
    ...
    ValueError: TensorProduct: no allowed path from 1x1o x 1x1o to 1x1o ...
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, shared_weights: bool = True,
                 internal_weights: bool | None = None, path_normalization: str = "element"):
        super().__init__()
        self.irreps_in1 = _as_irreps(irreps_in1, "irreps_in1")
        self.irreps_in2 = _as_irreps(irreps_in2, "irreps_in2")
        self.irreps_out = _as_irreps(irreps_out, "irreps_out")
        if path_normalization not in ("element", "path", "none"):
            raise ValueError(
                f"path_normalization must be 'element', 'path' or 'none', got {path_normalization!r}")
        if internal_weights is None:
            internal_weights = shared_weights
        if internal_weights and not shared_weights:
            raise ValueError("internal_weights=True requires shared_weights=True")
        self.shared_weights = bool(shared_weights)
        self.internal_weights = bool(internal_weights)
        self.path_normalization = path_normalization

        e1, e2, eo = _entries(self.irreps_in1), _entries(self.irreps_in2), _entries(self.irreps_out)
        # allowed (i1, i2, i_out), ordered by i_out, then i1, then i2
        triples = [
            (i1, i2, io)
            for io, (_, l3, p3, _, _) in enumerate(eo)
            for i1, (_, l1, p1, _, _) in enumerate(e1)
            for i2, (_, l2, p2, _, _) in enumerate(e2)
            if abs(l1 - l2) <= l3 <= l1 + l2 and p1 * p2 == p3
            and e1[i1][0] * e2[i2][0] * eo[io][0] > 0  # skip zero multiplicities
        ]
        if not triples:
            raise ValueError(
                f"TensorProduct: no allowed path from {self.irreps_in1} x {self.irreps_in2} "
                f"to {self.irreps_out} (need |l1-l2| <= l3 <= l1+l2 and p1*p2 == p3)")
        fan_in = [0] * len(eo)
        n_paths = [0] * len(eo)
        for i1, i2, io in triples:
            fan_in[io] += e1[i1][0] * e2[i2][0]
            n_paths[io] += 1
        paths, start = [], 0
        for i1, i2, io in triples:
            mul1, mul2, mulo = e1[i1][0], e2[i2][0], eo[io][0]
            if path_normalization == "element":
                alpha = 1.0 / math.sqrt(fan_in[io])
            elif path_normalization == "path":
                alpha = 1.0 / math.sqrt(n_paths[io] * mul1 * mul2)
            else:
                alpha = 1.0
            n = mul1 * mul2 * mulo
            paths.append(Path(i1, i2, io, e1[i1][1], e2[i2][1], eo[io][1],
                              mul1, mul2, mulo, start, start + n, alpha))
            start += n
        self.paths = paths
        self.weight_numel = start
        self._e1, self._e2, self._eo = e1, e2, eo

        # Per input pair (i1, i2): the alpha-scaled CG tensors of its paths, concatenated
        # along k and stored transposed as a [K, d1 * d2] matrix (see forward).
        self._pairs = []  # [(i1, i2, [(path index, k_start, k_stop)])]
        pair_index = {}
        for n, p in enumerate(paths):
            pair_index.setdefault((p.i_in1, p.i_in2), []).append(n)
        for (i1, i2), members in sorted(pair_index.items()):
            blocks, ranges, k = [], [], 0
            for n in members:
                p = paths[n]
                C = clebsch_gordan(p.l1, p.l2, p.l3) * p.alpha  # [d1, d2, d3] float64
                blocks.append(C)
                ranges.append((n, k, k + C.shape[2]))
                k += C.shape[2]
            C = torch.cat(blocks, dim=2)  # [d1, d2, K]
            # kept in float64 (cast to the input's dtype in forward) so that a module built
            # in float32 and moved to float64 still has exact coefficients
            self.register_buffer(f"cg_{i1}_{i2}", C.reshape(-1, k).T.contiguous(),
                                 persistent=False)  # [K, d1 * d2]
            self._pairs.append((i1, i2, ranges))
        # Per output entry: its paths (consecutive in the weight vector).
        self._by_out = [[n for n, p in enumerate(paths) if p.i_out == io] for io in range(len(eo))]

        if self.internal_weights:
            self.weight = nn.Parameter(torch.randn(self.weight_numel))
        else:
            self.register_parameter("weight", None)

    def extra_repr(self):
        return (f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, "
                f"{len(self.paths)} paths, weight_numel={self.weight_numel}")

    def _check(self, x1, x2, weight):
        self.irreps_in1.check_features(x1, "x1")
        self.irreps_in2.check_features(x2, "x2")
        try:
            batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"batch shapes of x1 {tuple(x1.shape[:-1])} and x2 {tuple(x2.shape[:-1])} "
                f"do not broadcast") from None
        if weight is None:
            if self.weight is None:
                raise ValueError(
                    "this TensorProduct has no internal weights (internal_weights=False): "
                    f"call it as tp(x1, x2, weight) with weight [..., {self.weight_numel}]")
            weight = self.weight
        if not torch.is_tensor(weight):
            raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
        if weight.ndim == 0 or weight.shape[-1] != self.weight_numel:
            raise ValueError(
                f"weight must have shape [{self.weight_numel}] or [..., {self.weight_numel}], "
                f"got {tuple(weight.shape)}")
        if weight.ndim > 1:
            try:
                batch = torch.broadcast_shapes(batch, weight.shape[:-1])
            except RuntimeError:
                raise ValueError(
                    f"batch shape of weight {tuple(weight.shape[:-1])} does not broadcast "
                    f"with the batch shape {tuple(batch)} of x1 and x2") from None
        return batch, weight

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None):
        batch, weight = self._check(x1, x2, weight)
        dtype = torch.promote_types(torch.promote_types(x1.dtype, x2.dtype), weight.dtype)
        x1, x2, weight = x1.to(dtype), x2.to(dtype), weight.to(dtype)
        B = math.prod(batch)
        x1 = x1.expand(*batch, x1.shape[-1]).reshape(B, x1.shape[-1])  # [B, dim1]
        x2 = x2.expand(*batch, x2.shape[-1]).reshape(B, x2.shape[-1])  # [B, dim2]
        if weight.ndim == 1:
            out = self._shared(x1, x2, weight)  # [B, dim_out]
        else:
            weight = weight.expand(*batch, self.weight_numel).reshape(B, self.weight_numel)  # [B, weight_numel]
            out = self._per_sample(x1, x2, weight)  # [B, dim_out]
        return out.reshape(*batch, self.irreps_out.dim)

    def _shared(self, x1, x2, weight):
        """One weight vector for the whole batch.  The batch index goes last, so that
        every contraction is one large matrix product with no per-sample small matrices."""
        B = x1.shape[0]
        # (blocks are taken with split, whose backward is one concatenation, not one
        # zero-filled full-size gradient per slice)
        x1t = x1.T.contiguous().split([e[4] - e[3] for e in self._e1])  # [mul1*d1, B] each
        x2t = x2.T.contiguous().split([e[4] - e[3] for e in self._e2])  # [mul2*d2, B] each
        weights = weight.split([p.weight_stop - p.weight_start for p in self.paths])

        # 1. CG contraction, pair by pair:  s[uv, k, b] = sum_ij C_ijk x1[b, u, i] x2[b, v, j]
        s = [None] * len(self.paths)
        for i1, i2, ranges in self._pairs:
            mul1, l1 = self._e1[i1][:2]
            mul2, l2 = self._e2[i2][:2]
            d1, d2 = 2 * l1 + 1, 2 * l2 + 1
            cg = getattr(self, f"cg_{i1}_{i2}").to(x1.dtype)  # [K, d1*d2]
            z = (x1t[i1].reshape(mul1, 1, d1, 1, B)
                 * x2t[i2].reshape(1, mul2, 1, d2, B))  # [U, V, d1, d2, B]
            t = torch.matmul(cg, z.reshape(mul1 * mul2, d1 * d2, B))  # [U*V, K, B]
            parts = t.split([k1 - k0 for _, k0, k1 in ranges], dim=1) if len(ranges) > 1 else [t]
            for (n, _, _), part in zip(ranges, parts):
                s[n] = part  # [U*V, d3, B]

        # 2. mix the multiplicities, output entry by output entry:
        #    y[w, k, b] = sum over paths, uv of W[uv, w] s[uv, k, b]
        outs = []
        for io, (mulo, l3, _, _, _) in enumerate(self._eo):
            d3 = 2 * l3 + 1
            y = None
            for n in self._by_out[io]:
                p = self.paths[n]
                W = weights[n].reshape(p.mul_in1 * p.mul_in2, mulo).T  # [W, U*V]
                sn = s[n].reshape(p.mul_in1 * p.mul_in2, d3 * B)  # [U*V, d3*B] (a strided view)
                y = W @ sn if y is None else torch.addmm(y, W, sn)  # [W, d3*B]
            outs.append(x1.new_zeros(mulo * d3, B) if y is None else y.reshape(mulo * d3, B))
        return torch.cat(outs, dim=0).T.contiguous()  # [B, dim_out]

    def _per_sample(self, x1, x2, weight):
        """One weight vector per sample: batched matrix products with the batch index first."""
        B = x1.shape[0]
        x1s = x1.split([e[4] - e[3] for e in self._e1], dim=1)  # [B, mul1*d1] each
        x2s = x2.split([e[4] - e[3] for e in self._e2], dim=1)  # [B, mul2*d2] each
        sizes = [sum(self.paths[n].weight_stop - self.paths[n].weight_start for n in m) for m in self._by_out]
        weights = weight.split(sizes, dim=1)  # [B, weights of output entry io] each

        # 1. CG contraction, pair by pair:  s[b, k, u, v] = sum_ij C_ijk x1[b, u, i] x2[b, v, j]
        s = [None] * len(self.paths)
        for i1, i2, ranges in self._pairs:
            mul1, l1 = self._e1[i1][:2]
            mul2, l2 = self._e2[i2][:2]
            d1, d2 = 2 * l1 + 1, 2 * l2 + 1
            cg = getattr(self, f"cg_{i1}_{i2}").to(x1.dtype)  # [K, d1*d2]
            K = cg.shape[0]
            cg = cg.reshape(K, d1, d2).permute(2, 0, 1).reshape(d2, K * d1)  # [d2, K*d1]
            g = (x2s[i2].reshape(B * mul2, d2) @ cg).reshape(B, mul2 * K, d1)  # [B, V*K, d1]
            u = x1s[i1].reshape(B, mul1, d1)  # [B, U, d1]
            t = torch.bmm(g, u.transpose(1, 2))  # [B, V*K, U]
            t = t.reshape(B, mul2, K, mul1).permute(0, 2, 3, 1)  # [B, K, U, V]
            parts = t.split([k1 - k0 for _, k0, k1 in ranges], dim=1) if len(ranges) > 1 else [t]
            for (n, k0, k1), part in zip(ranges, parts):
                s[n] = part.reshape(B, k1 - k0, mul1 * mul2)  # [B, d3, U*V]

        # 2. mix the multiplicities with each sample's weights, output entry by output entry:
        #    y[b, k, w] = sum over paths, uv of s[b, k, uv] W[b, uv, w]
        outs = []
        for io, (mulo, l3, _, _, _) in enumerate(self._eo):
            d3 = 2 * l3 + 1
            members = self._by_out[io]
            if not members:
                outs.append(x1.new_zeros(B, mulo * d3))
                continue
            S = torch.cat([s[n] for n in members], dim=2) if len(members) > 1 else s[members[0]]  # [B, d3, Q]
            W = weights[io].reshape(B, S.shape[2], mulo)  # [B, Q, W]
            y = torch.bmm(S, W)  # [B, d3, W]
            outs.append(y.transpose(1, 2).reshape(B, mulo * d3))  # [B, W*d3]
        return torch.cat(outs, dim=1)  # [B, dim_out]
