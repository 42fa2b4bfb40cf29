r"""The equivariant product of two irreps features: ``TensorProduct``.

Two features ``x1`` (irreps ``irreps_in1``) and ``x2`` (irreps ``irreps_in2``)
are multiplied irrep by irrep.  For a copy ``u`` of irrep ``(l1, p1)`` in
``x1`` and a copy ``v`` of ``(l2, p2)`` in ``x2``, the Clebsch-Gordan tensor
``C = clebsch_gordan(l1, l2, l3)`` turns the ``(2l1+1)(2l2+1)`` products of
their components into an ``(l3, p1 p2)`` feature

.. math:: z_{uv, k} = \sum_{ij} C_{ijk}\, x_{1,ui}\, x_{2,vj},

which is equivariant because :math:`(D^{l_1} \otimes D^{l_2}) C = C D^{l_3}`
(see :mod:`minequi.conventions`).  A *path* (an *instruction* in e3nn)
``(i1, i2, i_out, mode)`` connects the ``i1``-th entry ``mul1 x (l1, p1)`` of
``irreps_in1``, the ``i2``-th entry ``mul2 x (l2, p2)`` of ``irreps_in2`` and
the ``i_out``-th entry ``mul_out x (l3, p3)`` of ``irreps_out``; it is
*allowed* when

* :math:`|l_1 - l_2| \le l_3 \le l_1 + l_2` (otherwise ``C = 0``), and
* :math:`p_1 p_2 = p_3` (parity of a product).

Connection modes
----------------
The ``mode`` says how the multiplicities are connected (e3nn's names):

* ``"uvw"`` (*fully connected*): one weight per triple ``(u, v, w)``,

  .. math:: \text{out}_{i_\text{out}, w k} \mathrel{+}= \alpha \sum_{u v} W_{u v w}\, z_{uv, k};

* ``"uvu"`` (*depthwise*, ``mul_out == mul1``): one weight per pair ``(u, v)``,
  and copy ``u`` of ``x1`` only feeds copy ``u`` of the output,

  .. math:: \text{out}_{i_\text{out}, u k} \mathrel{+}= \alpha \sum_{v} W_{u v}\, z_{uv, k}.

  This is the tensor product of the tensor field network point convolution
  :cite:`thomas2018tensor` (and of NequIP and MACE): with ``x2`` the spherical
  harmonics of an edge (``mul2 = 1``), each channel ``u`` of the neighbour's
  feature is filtered by its own radial weight per path.

Without ``instructions`` the module is fully connected, like e3nn's
``FullyConnectedTensorProduct``: every allowed path, mode ``"uvw"``, ordered by
``i_out``, then ``i1``, then ``i2``.  With ``instructions`` exactly the listed
paths are used, in the listed order.

Normalisation
-------------
``C`` has orthonormal columns, so if the components of ``x1`` and ``x2`` are
independent with variance 1 ("component" normalisation) each ``z_k`` has
variance :math:`\sum_{ij} C_{ijk}^2 = 1`.  With weights drawn from
:math:`N(0, 1)`, an output component of a path is a sum of ``n_elements``
unit-variance terms: ``mul1 * mul2`` for ``"uvw"``, ``mul2`` for ``"uvu"``.
Summed over the paths into ``i_out`` that makes ``fan_in`` terms, so

* ``path_normalization="element"`` (default, e3nn's default):
  :math:`\alpha = 1/\sqrt{\text{fan\_in}}` and every output component has variance 1;
* ``"path"``: :math:`\alpha = 1/\sqrt{n_\text{paths} \cdot n_\text{elements}}`
  (each path contributes the same variance, the total is still 1);
* ``"none"``: :math:`\alpha = 1`.

These are e3nn's ``path_normalization`` with ``irrep_normalization="component"``:
e3nn's coefficient ``sqrt(2 l3 + 1) * wigner_3j(l1, l2, l3)`` equals ``s * C`` with a
sign ``s = +-1`` per ``(l1, l2, l3)`` (see the conventions page), so both libraries
give the same outputs up to that sign per path.

Output entries that no path reaches are zero.  A tensor product with no
allowed path at all raises ``ValueError`` (it would always output zeros).

Weights
-------
``weight_numel = sum over paths of the size of their blocks``; the weight vector
is the concatenation of the paths' blocks, ``[mul1, mul2, mul_out]`` for
``"uvw"`` and ``[mul1, mul2]`` for ``"uvu"`` (e3nn's layout), in the order of
:attr:`TensorProduct.paths`.  Call as ``tp(x1, x2)`` with the module's own
(internal) weights, or ``tp(x1, x2, weight)`` with ``weight`` of shape
``[weight_numel]`` (one set shared by the batch) or ``[..., weight_numel]``
(one set per sample, e.g. per edge of a graph, broadcast against the batch
shape of ``x1`` and ``x2``).

Precision
---------
``x1``, ``x2`` and the weights (the module's parameters, or the ``weight``
argument) must share one floating dtype and device, else ``TypeError`` (the
library's rule: a module's parameters must match its input).  The
Clebsch-Gordan tensors are kept in float64 whatever the module's dtype
(``.float()``, ``.half()`` and ``.to(dtype)`` move them to a new device but
never round them) and are cast to the input's dtype at each call, so a module
that went through float32 and back to float64 is exact again.

Computation
-----------
With shared weights the batch index is moved last, so that each contraction is
one large matrix product: for each pair ``(i1, i2)`` the outer product of the
two blocks is contracted with the Clebsch-Gordan tensors of all the pair's
paths at once (concatenated along ``k``), then each output entry is a sum of
``W^T @ s`` products (``"uvw"``) or of per-``u`` weighted sums (``"uvu"``).
With per-sample weights the batch index stays first and the contractions are
batched matrix products; a ``"uvu"`` pair contracts ``x2`` with ``C`` first
(:meth:`TensorProduct.contract_pair`), so that no ``[batch, mul1, mul2, d1, d2]``
outer product is ever formed.  The path normalisation is folded into the stored
Clebsch-Gordan tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .clebsch_gordan import clebsch_gordan
from .irreps import Irreps

__all__ = ["Path", "TensorProduct"]

MODES = ("uvw", "uvu")


@dataclass(frozen=True)
class Path:
    """One path ``(i_in1, i_in2) -> i_out`` of a :class:`TensorProduct`.

    ``weight_start:weight_stop`` is its block of the weight vector, read as
    ``[mul_in1, mul_in2, mul_out]`` (mode ``"uvw"``) or ``[mul_in1, mul_in2]``
    (mode ``"uvu"``); ``alpha`` is its normalisation constant.
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
    mode: str = "uvw"


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


def _allowed(a, b, c):
    """Selection rules for entries ``a x b -> c`` given as ``(mul, l, p, ...)``."""
    return abs(a[1] - b[1]) <= c[1] <= a[1] + b[1] and a[2] * b[2] == c[2]


def _check_instructions(instructions, e1, e2, eo, names):
    """Validate user instructions; return ``[(i1, i2, i_out, mode)]``."""
    if isinstance(instructions, (str, bytes)) or not hasattr(instructions, "__iter__"):
        raise TypeError("instructions must be a list of (i_in1, i_in2, i_out, mode) tuples, "
                        f"got {type(instructions).__name__}")
    out = []
    for n, ins in enumerate(instructions):
        if not isinstance(ins, (tuple, list)) or len(ins) != 4:
            raise ValueError(f"instructions[{n}] must be a tuple (i_in1, i_in2, i_out, mode), got {ins!r}")
        *idx, mode = ins
        for i, entries, name in zip(idx, (e1, e2, eo), names):
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(entries):
                raise ValueError(f"instructions[{n}] = {tuple(ins)!r}: index {i!r} into {name} must be an "
                                 f"int in [0, {len(entries)})")
        if mode not in MODES:
            raise ValueError(f"instructions[{n}] = {tuple(ins)!r}: mode must be one of {MODES}, got {mode!r}")
        i1, i2, io = idx
        if not _allowed(e1[i1], e2[i2], eo[io]):
            raise ValueError(
                f"instructions[{n}] = {tuple(ins)!r}: the path l{e1[i1][1]} x l{e2[i2][1]} -> l{eo[io][1]} "
                f"with parities {e1[i1][2]}, {e2[i2][2]} -> {eo[io][2]} is not allowed "
                f"(need |l1-l2| <= l3 <= l1+l2 and p1*p2 == p3)")
        if mode == "uvu" and e1[i1][0] != eo[io][0]:
            raise ValueError(f"instructions[{n}] = {tuple(ins)!r}: mode 'uvu' needs mul_out == mul_in1, "
                             f"got {eo[io][0]} and {e1[i1][0]}")
        out.append((i1, i2, io, mode))
    if not out:
        raise ValueError("instructions is empty: a TensorProduct needs at least one path")
    return out


class TensorProduct(nn.Module):
    r"""Equivariant tensor product ``irreps_in1 x irreps_in2 -> irreps_out``.

    See the module docstring for the formula, the connection modes, the
    normalisation and the weight layout.

    Args:
        irreps_in1, irreps_in2, irreps_out: ``Irreps`` or strings such as ``"16x0e+8x1o"``.
        instructions: ``None`` (fully connected: every allowed path, mode ``"uvw"``) or a
            list of ``(i_in1, i_in2, i_out, mode)`` with ``mode`` in ``("uvw", "uvu")``.
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
    >>> dw = TensorProduct("4x0e+4x1o", "0e+1o", "4x0e+4x1o",
    ...                    instructions=[(0, 0, 0, "uvu"), (0, 1, 1, "uvu"), (1, 0, 1, "uvu"), (1, 1, 0, "uvu")])
    >>> dw.weight_numel, dw(torch.randn(3, 16), torch.randn(3, 4), torch.randn(3, 16)).shape
    (16, torch.Size([3, 16]))
    >>> TensorProduct("1o", "1o", "1o")
    Traceback (most recent call last):
    ...
    ValueError: TensorProduct: no allowed path from 1x1o x 1x1o to 1x1o ...
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, instructions=None, shared_weights: bool = True,
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
        if instructions is None:
            # every allowed (i1, i2, i_out), ordered by i_out, then i1, then i2
            triples = [
                (i1, i2, io, "uvw")
                for io in range(len(eo)) for i1 in range(len(e1)) for i2 in range(len(e2))
                if _allowed(e1[i1], e2[i2], eo[io]) and e1[i1][0] * e2[i2][0] * eo[io][0] > 0
            ]
            if not triples:
                raise ValueError(
                    f"TensorProduct: no allowed path from {self.irreps_in1} x {self.irreps_in2} "
                    f"to {self.irreps_out} (need |l1-l2| <= l3 <= l1+l2 and p1*p2 == p3)")
        else:
            triples = _check_instructions(instructions, e1, e2, eo, ("irreps_in1", "irreps_in2", "irreps_out"))

        def n_elements(i1, i2, mode):  # unit-variance terms per output component of a path
            return e1[i1][0] * e2[i2][0] if mode == "uvw" else e2[i2][0]

        fan_in = [0] * len(eo)
        n_paths = [0] * len(eo)
        for i1, i2, io, mode in triples:
            fan_in[io] += n_elements(i1, i2, mode)
            n_paths[io] += 1
        paths, start = [], 0
        for i1, i2, io, mode in triples:
            mul1, mul2, mulo = e1[i1][0], e2[i2][0], eo[io][0]
            if path_normalization == "element":
                x = fan_in[io]
            elif path_normalization == "path":
                x = n_paths[io] * n_elements(i1, i2, mode)
            else:
                x = 1
            alpha = 1.0 / math.sqrt(x) if x > 0 else 1.0
            n = mul1 * mul2 * mulo if mode == "uvw" else mul1 * mul2
            paths.append(Path(i1, i2, io, e1[i1][1], e2[i2][1], eo[io][1],
                              mul1, mul2, mulo, start, start + n, alpha, mode))
            start += n
        self.paths = paths
        self.weight_numel = start
        self._e1, self._e2, self._eo = e1, e2, eo

        # Per input pair (i1, i2): the alpha-scaled CG tensors of its paths, concatenated
        # along k into one [d1, d2, K] buffer named cg_{i1}_{i2}.  `pairs` lists
        # (i1, i2, [(path index, k_start, k_stop)]) (paths of zero size are left out).
        self.pairs = []
        self._cg_exact = {}  # float64 master copies (CPU), never cast: see _apply
        pair_index = {}
        for n, p in enumerate(paths):
            if p.mul_in1 * p.mul_in2 * p.mul_out > 0:
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
            self._cg_exact[f"cg_{i1}_{i2}"] = C
            self.register_buffer(f"cg_{i1}_{i2}", C.clone(), persistent=False)  # [d1, d2, K]
            self.pairs.append((i1, i2, ranges))
        # Per output entry: its paths.
        self._by_out = [[n for n in range(len(paths)) if paths[n].i_out == io] for io in range(len(eo))]
        # Segments of a per-sample weight vector: ("out", io) for the "uvw" paths of an output
        # entry whose blocks are consecutive (always so without instructions), else ("path", n).
        segments = {}
        for io, members in enumerate(self._by_out):
            uvw = [n for n in members if paths[n].mode == "uvw"]
            if uvw and uvw == list(range(uvw[0], uvw[0] + len(uvw))):
                segments["out", io] = (paths[uvw[0]].weight_start, paths[uvw[-1]].weight_stop)
            else:
                segments.update({("path", n): (paths[n].weight_start, paths[n].weight_stop) for n in uvw})
        segments.update({("path", n): (p.weight_start, p.weight_stop) for n, p in enumerate(paths) if p.mode == "uvu"})
        self._segments = sorted(segments, key=lambda key: segments[key])
        self._segment_sizes = [segments[key][1] - segments[key][0] for key in self._segments]

        if self.internal_weights:
            self.weight = nn.Parameter(torch.randn(self.weight_numel))
        else:
            self.register_parameter("weight", None)

    def _apply(self, fn, *args, **kwargs):
        """``.to()``, ``.float()``, ``.half()``, ``.cuda()``, ...: the Clebsch-Gordan buffers
        follow the device but stay float64 (restored from the exact master copies when a
        dtype cast rounded them), so ``tp.float().double()`` is exact again."""
        module = super()._apply(fn, *args, **kwargs)
        for name, exact in self._cg_exact.items():
            buf = self._buffers[name]
            if buf.dtype != torch.float64:
                self._buffers[name] = exact.to(buf.device)
        return module

    def extra_repr(self):
        modes = sorted({p.mode for p in self.paths})
        return (f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, "
                f"{len(self.paths)} paths ({'+'.join(modes)}), weight_numel={self.weight_numel}")

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
        # one dtype and device rule for every module: inputs and parameters must agree
        for t, name in ((x1, "x1"), (x2, "x2"), (weight, "weight")):
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        what = "the parameters (internal weights)" if weight is self.weight else "weight"
        if not x1.dtype == x2.dtype == weight.dtype or not x1.device == x2.device == weight.device:
            raise TypeError(
                f"TensorProduct: x1 is {x1.dtype} on {x1.device}, x2 is {x2.dtype} on {x2.device} and {what} "
                f"{weight.dtype} on {weight.device}; they must match (use .to(...) on the module or the inputs)")
        return batch, weight

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None):
        batch, weight = self._check(x1, x2, weight)
        B = math.prod(batch)
        x1 = x1.expand(*batch, x1.shape[-1]).reshape(B, x1.shape[-1])  # [B, dim1]
        x2 = x2.expand(*batch, x2.shape[-1]).reshape(B, x2.shape[-1])  # [B, dim2]
        if weight.ndim == 1:
            out = self._shared(x1, x2, weight)  # [B, dim_out]
        else:
            weight = weight.expand(*batch, self.weight_numel).reshape(B, self.weight_numel)  # [B, weight_numel]
            out = self._per_sample(x1, x2, weight)  # [B, dim_out]
        return out.reshape(*batch, self.irreps_out.dim)

    def cg(self, i1: int, i2: int, dtype: torch.dtype) -> torch.Tensor:
        """The alpha-scaled Clebsch-Gordan tensors of pair ``(i1, i2)``, concatenated along
        ``k`` in the order of ``pairs``, as ``[d1, d2, K]`` in ``dtype``."""
        return getattr(self, f"cg_{i1}_{i2}").to(dtype)

    def contract_pair(self, x1: torch.Tensor, x2: torch.Tensor, i1: int, i2: int) -> torch.Tensor:
        r"""``t[b, u, v, k] = sum_ij C_ijk x1[b, u, i] x2[b, v, j]`` for the pair ``(i1, i2)``.

        ``x1 [B, mul1 * d1]`` is the ``i1``-th entry of a ``irreps_in1`` feature and
        ``x2 [B, mul2 * d2]`` the ``i2``-th entry of a ``irreps_in2`` feature (same dtype);
        ``k`` runs over the concatenated paths of the pair (see ``pairs``), normalisation
        included.  ``x2`` is contracted with ``C`` first and the result is one batched
        matrix product with ``x1``, so the ``[B, U, V, d1, d2]`` outer product is never
        formed.  Returns ``[B, mul1, mul2, K]``.
        """
        B = x1.shape[0]
        mul1, l1 = self._e1[i1][:2]
        mul2, l2 = self._e2[i2][:2]
        d1, d2 = 2 * l1 + 1, 2 * l2 + 1
        C = self.cg(i1, i2, x1.dtype)  # [d1, d2, K]
        K = C.shape[2]
        M = C.permute(1, 0, 2).reshape(d2, d1 * K)  # [d2, d1*K]
        g = x2.reshape(B * mul2, d2) @ M  # [B*V, d1*K]
        g = g.reshape(B, mul2, d1, K).transpose(1, 2).reshape(B, d1, mul2 * K)  # [B, d1, V*K]
        t = torch.bmm(x1.reshape(B, mul1, d1), g)  # [B, U, V*K]
        return t.reshape(B, mul1, mul2, K)

    def uvu_products(self, x1s, x2s, weights):
        r"""Yield ``(i_out, a, b)`` for every ``"uvu"`` path: ``a * b`` (broadcast) is the path's
        contribution ``[B, U, d3]`` to output entry ``i_out``, per-sample weights included.

        ``x1s`` and ``x2s`` are the entry blocks of ``x1 [B, dim1]`` and ``x2 [B, dim2]``
        (``x.split`` by entry), ``weights[n]`` the ``[B, U * V]`` weights of path ``n``.
        In general ``a`` is the path's part of the pair's contraction (:meth:`contract_pair`)
        ``t[b, u, v, k]`` and ``b`` its weights.  Two kinds of pairs with a single copy in
        ``x2`` (``mul2 = 1``) are factored so that autograd keeps only ``[B, U]`` tensors
        (and views of ``x1``) for the backward, not ``[B, U, d3]`` ones (the same outputs,
        less memory and time):

        * ``l1 = 0``: ``(w x1)[b, u] * (x2 C)[b, k]``;
        * ``l2 = 0``: ``C(l, 0, l) = c I`` (Schur's lemma), so ``x1[b, u, k] * (c w x2)[b, u]``.
        """
        B = x1s[0].shape[0]
        for i1, i2, ranges in self.pairs:
            uvu = [(n, k0, k1) for n, k0, k1 in ranges if self.paths[n].mode == "uvu"]
            if not uvu:
                continue
            U, l1 = self._e1[i1][:2]
            V, l2 = self._e2[i2][:2]
            if V == 1 and (l1 == 0 or l2 == 0):  # every path of the pair has l3 = l2 (or l1)
                C = self.cg(i1, i2, x1s[i1].dtype)  # [d1, d2, K]
                for n, k0, k1 in uvu:
                    if l1 == 0:
                        G = x2s[i2] @ C[0, :, k0:k1]  # [B, d3]
                        yield self.paths[n].i_out, (x1s[i1] * weights[n])[:, :, None], G[:, None, :]  # [B, U, 1], [B, 1, d3]
                    else:
                        c = weights[n] * (x2s[i2] * C[0, 0, k0])  # [B, U]
                        yield self.paths[n].i_out, x1s[i1].reshape(B, U, 2 * l1 + 1), c[:, :, None]  # [B, U, d1], [B, U, 1]
                continue
            t = self.contract_pair(x1s[i1], x2s[i2], i1, i2)  # [B, U, V, K]  all paths of the pair
            K = t.shape[3]
            # path n with copy v of x2 is t[:, :, v, k0:k1]: the pieces of one split (the
            # backward of a split is one concatenation; slices would each get a zero-filled
            # full-size gradient); the pair's "uvw" paths, if any, are skipped
            pieces = t.reshape(B, U, V * K).split([k1 - k0 for _, k0, k1 in ranges] * V, dim=2)
            for j, t_p in enumerate(pieces):  # [B, U, d3]
                v, (n, _, _) = j // len(ranges), ranges[j % len(ranges)]  # copy of x2, path
                if self.paths[n].mode != "uvu":
                    continue
                w_p = weights[n].reshape(B, U, V, 1)[:, :, v] if V > 1 else weights[n].reshape(B, U, 1)  # [B, U, 1]
                yield self.paths[n].i_out, t_p, w_p

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
        for i1, i2, ranges in self.pairs:
            mul1, l1 = self._e1[i1][:2]
            mul2, l2 = self._e2[i2][:2]
            d1, d2 = 2 * l1 + 1, 2 * l2 + 1
            cg = self.cg(i1, i2, x1.dtype).reshape(d1 * d2, -1).T  # [K, d1*d2]
            z = (x1t[i1].reshape(mul1, 1, d1, 1, B)
                 * x2t[i2].reshape(1, mul2, 1, d2, B))  # [U, V, d1, d2, B]
            t = torch.matmul(cg, z.reshape(mul1 * mul2, d1 * d2, B))  # [U*V, K, B]
            parts = t.split([k1 - k0 for _, k0, k1 in ranges], dim=1) if len(ranges) > 1 else [t]
            for (n, _, _), part in zip(ranges, parts):
                s[n] = part  # [U*V, d3, B]

        # 2. mix the multiplicities, output entry by output entry:
        #    uvw: y[w, k, b] += sum_uv W[uv, w] s[uv, k, b];  uvu: y[u, k, b] += sum_v W[u, v] s[uv, k, b]
        outs = []
        for io, (mulo, l3, _, _, _) in enumerate(self._eo):
            d3 = 2 * l3 + 1
            y = None
            for n in self._by_out[io]:
                p = self.paths[n]
                if s[n] is None:  # a path of zero size
                    continue
                U, V = p.mul_in1, p.mul_in2
                if p.mode == "uvw":
                    W = weights[n].reshape(U * V, mulo).T  # [W, U*V]
                    sn = s[n].reshape(U * V, d3 * B)  # [U*V, d3*B] (a strided view)
                    y = W @ sn if y is None else torch.addmm(y, W, sn)  # [W, d3*B]
                else:
                    W = weights[n].reshape(U, V, 1)  # [U, V, 1]
                    yn = (s[n].reshape(U, V, d3 * B) * W).sum(dim=1)  # [U, d3*B]
                    y = yn if y is None else y + yn
            outs.append(x1.new_zeros(mulo * d3, B) if y is None else y.reshape(mulo * d3, B))
        return torch.cat(outs, dim=0).T.contiguous()  # [B, dim_out]

    def _per_sample(self, x1, x2, weight):
        """One weight vector per sample: batched matrix products with the batch index first."""
        B = x1.shape[0]
        x1s = x1.split([e[4] - e[3] for e in self._e1], dim=1)  # [B, mul1*d1] each
        x2s = x2.split([e[4] - e[3] for e in self._e2], dim=1)  # [B, mul2*d2] each
        # one split into the segments of _segments (never slicing: each slice would get its own
        # zero-filled [B, weight_numel] gradient in the backward)
        pieces = dict(zip(self._segments, weight.split(self._segment_sizes, dim=1)))  # [B, segment size] each

        # 1. CG contraction, pair by pair.
        #    uvu: y[b, u, k] = sum of the paths' products a * b from uvu_products
        #    uvw: s[b, k, uv] = sum_ij C_ijk x1[b, u, i] x2[b, v, j] (layout for a bmm with W[b, uv, w])
        y_uvu = [None] * len(self._eo)  # per output entry: the sum of its uvu paths [B, U, d3]
        uvu_weights = {n: pieces["path", n] for n, p in enumerate(self.paths) if p.mode == "uvu"}
        for io, a, b in self.uvu_products(x1s, x2s, uvu_weights):
            y_uvu[io] = a * b if y_uvu[io] is None else torch.addcmul(y_uvu[io], a, b)  # [B, U, d3]
        s = [None] * len(self.paths)
        for i1, i2, ranges in self.pairs:
            mul1, l1 = self._e1[i1][:2]
            mul2, l2 = self._e2[i2][:2]
            d1, d2 = 2 * l1 + 1, 2 * l2 + 1
            # (split, not slicing: the backward of split is one concatenation, not one
            # zero-filled full-size gradient per slice)
            sizes = [k1 - k0 for _, k0, k1 in ranges]
            if any(self.paths[n].mode == "uvw" for n, _, _ in ranges):
                cg = self.cg(i1, i2, x1.dtype)  # [d1, d2, K]
                K = cg.shape[2]
                cg = cg.permute(1, 2, 0).reshape(d2, K * d1)  # [d2, K*d1]
                g = (x2s[i2].reshape(B * mul2, d2) @ cg).reshape(B, mul2 * K, d1)  # [B, V*K, d1]
                u = x1s[i1].reshape(B, mul1, d1)  # [B, U, d1]
                t = torch.bmm(g, u.transpose(1, 2))  # [B, V*K, U]
                t = t.reshape(B, mul2, K, mul1).permute(0, 2, 3, 1)  # [B, K, U, V]
                parts = t.split(sizes, dim=1) if len(ranges) > 1 else [t]
                for (n, k0, k1), part in zip(ranges, parts):
                    if self.paths[n].mode == "uvw":
                        s[n] = part.reshape(B, k1 - k0, mul1 * mul2)  # [B, d3, U*V]

        # 2. mix the multiplicities with each sample's weights, output entry by output entry:
        #    uvw: y[b, k, w] = sum over paths, uv of s[b, k, uv] W[b, uv, w]
        outs = []
        for io, (mulo, l3, _, _, _) in enumerate(self._eo):
            d3 = 2 * l3 + 1
            members = [n for n in self._by_out[io] if s[n] is not None]
            y = None
            if members:
                S = torch.cat([s[n] for n in members], dim=2) if len(members) > 1 else s[members[0]]  # [B, d3, Q]
                if ("out", io) in pieces:  # the blocks of these paths are consecutive: one view
                    W = pieces["out", io]  # [B, Q*W]
                else:
                    W = torch.cat([pieces["path", n] for n in members], dim=1)  # [B, Q*W]
                y = torch.bmm(S, W.reshape(B, S.shape[2], mulo)).transpose(1, 2).reshape(B, mulo * d3)  # [B, W*d3]
            if y_uvu[io] is not None:
                yn = y_uvu[io].reshape(B, mulo * d3)  # [B, U*d3]
                y = yn if y is None else y + yn
            outs.append(x1.new_zeros(B, mulo * d3) if y is None else y)
        return torch.cat(outs, dim=1)  # [B, dim_out]
