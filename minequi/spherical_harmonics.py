r"""Real spherical harmonics :math:`Y_{lm}` for any ``l``, by recurrence.

Conventions (:mod:`minequi.conventions`): components ``m = -l..l``; the polar
axis is *y*, :math:`Y_{lm}(x, y, z) = S_{lm}(z, x, y)` with the textbook real
harmonics :math:`S_{lm}` (polar axis *z*), so that :math:`Y_1 \propto (x, y, z)`.

Method.  Write :math:`(X, Y, Z) = (z, x, y)` for the relabelled coordinates
(``Z`` is the polar one) and :math:`r^2 = X^2 + Y^2 + Z^2`.  The homogeneous
harmonic polynomial of degree ``l`` and order ``m >= 0`` factorises as

.. math:: r^l\, P_l^m(\cos\theta)\, e^{i m \varphi} = q_l^m(Z, r^2)\, (X + iY)^m,

(:math:`P_l^m` without the Condon-Shortley phase), so
:math:`S_{l,m} \propto q_l^{m}\, \mathrm{Re}(X+iY)^m` for ``m > 0`` and
:math:`S_{l,-m} \propto q_l^{m}\, \mathrm{Im}(X+iY)^{m}`.  Both factors obey
short recurrences:

.. math::
   (X + iY)^{m+1} = (X + iY)^m\,(X + iY), \qquad
   (l - m)\, q_l^m = (2l - 1)\, Z\, q_{l-1}^m - (l + m - 1)\, r^2\, q_{l-2}^m,

started from the constant :math:`q_m^m = (2m-1)!!`.  We propagate the
*normalised* factors :math:`\hat q_l^m = c_{lm} q_l^m` with
:math:`c_{lm} = \sqrt{(2l+1)\,(l-m)!/(l+m)!}\ (\times\sqrt 2 \text{ if } m > 0)`:

.. math::
   \hat q_l^m = \alpha_{lm}\, Z\, \hat q_{l-1}^m - \beta_{lm}\, r^2\, \hat q_{l-2}^m, \quad
   \alpha_{lm} = \sqrt{\tfrac{(2l+1)(2l-1)}{(l-m)(l+m)}}, \quad
   \beta_{lm} = \sqrt{\tfrac{2l+1}{2l-3}\,\tfrac{(l-m-1)(l+m-1)}{(l-m)(l+m)}},

and :math:`\hat q_l^l = \hat q_{l-1}^{l-1} \sqrt{(2l+1)/(2l)}` (times
:math:`\sqrt 2` for ``l = 1``): square roots of small rationals, no factorials,
so any ``l`` works.  Then :math:`Y_{l,\pm m} = \hat q_l^m \times (\mathrm{Re}, \mathrm{Im})(X+iY)^m`
has :math:`\sum_m Y_{lm}^2 = 2l+1` on the unit sphere (``"component"``).  Each
``(l, m)`` costs two or three elementwise tensor operations (one fused
``addcmul``), and the rows are stacked once at the end.
"""
from __future__ import annotations

import math

import torch

from .so3 import _check_l

__all__ = ["spherical_harmonics", "SphericalHarmonics"]

_NORMALIZATIONS = ("component", "norm", "integral")


_COEFFICIENTS = {}  # lmax -> (alpha, beta, diag); a dict, not functools.lru_cache, which torch.compile warns about


def _coefficients(lmax: int):
    r"""Python floats ``alpha[l][m]``, ``beta[l][m]`` (``m <= l-1``, ``m <= l-2``) and ``diag[l]`` = :math:`\hat q_l^l`."""
    if lmax not in _COEFFICIENTS:
        _COEFFICIENTS[lmax] = _build_coefficients(lmax)
    return _COEFFICIENTS[lmax]


def _build_coefficients(lmax: int):
    alpha = [[math.sqrt((2 * l + 1) * (2 * l - 1) / ((l - m) * (l + m))) for m in range(l)] for l in range(lmax + 1)]
    beta = [
        [math.sqrt((2 * l + 1) / (2 * l - 3) * (l - m - 1) * (l + m - 1) / ((l - m) * (l + m))) for m in range(l - 1)]
        for l in range(lmax + 1)
    ]
    diag = [1.0]
    for l in range(1, lmax + 1):
        diag.append(diag[-1] * math.sqrt((2 * l + 1) / (2 * l)) * (math.sqrt(2) if l == 1 else 1.0))
    return alpha, beta, diag


def _parse_ls(l):
    if isinstance(l, (list, tuple)):
        if len(l) == 0:
            raise ValueError("l must be a non-negative int or a non-empty list of them, got []")
        return [_check_l(li, "l") for li in l]
    return [_check_l(l, "l")]


def spherical_harmonics(l, x: torch.Tensor, normalize: bool = True, normalization: str = "component") -> torch.Tensor:
    r"""Real spherical harmonics of the points ``x`` ``[..., 3]`` -> ``[..., sum(2l+1)]``.

    Args:
        l: an int, or a list/tuple of ints whose blocks are concatenated in that order.
        x: points ``[..., 3]``, floating point (the output has its dtype and device).
        normalize: project ``x`` to the unit sphere first (default).  If ``False`` the
            result is the homogeneous harmonic polynomial :math:`|x|^l Y_{lm}(\hat x)`.
        normalization: ``"component"`` (:math:`\sum_m Y_{lm}^2 = 2l+1`, default),
            ``"norm"`` (:math:`\sum_m Y_{lm}^2 = 1`) or ``"integral"``
            (:math:`\int_{S^2} Y_{lm}^2 = 1`); see :mod:`minequi.conventions`.

    Contract: :math:`Y^l(R x) = D^l(R) Y^l(x)` with :func:`minequi.wigner_D`,
    :math:`Y^l(-x) = (-1)^l Y^l(x)`, and for ``l = 1`` (``"component"``)
    :math:`Y^1(x) = \sqrt 3\, x / |x|`.  Equal to e3nn's ``o3.spherical_harmonics``.
    Differentiable (autograd) in ``x``.

    Edge cases (``normalize=True``):

    * any finite nonzero ``x`` works, however small or large (``1e-300`` or ``1e200`` in
      float64, ``1e-25`` or ``1e20`` in float32): ``x`` is divided by its largest
      ``|coordinate|`` before the norm is taken, so :math:`|x|^2` never under- or overflows;
    * at ``x = 0`` the direction is undefined; the output is then the value of the harmonic
      polynomials at the origin, the constant for ``l = 0`` and zero for every ``l >= 1`` (as
      in e3nn), never NaN, and its **gradient is zero** for every ``l``.  Both are the only
      choices compatible with equivariance (:math:`Y^l(R\,0) = D^l(R)\, Y^l(0)` forces
      :math:`Y^l(0) = 0` for ``l >= 1``), so forces built from harmonics of relative vectors
      stay equivariant for coincident atoms and self-loops;
    * a row with an ``inf`` or ``NaN`` coordinate is NaN in every component (``l = 0``
      included), never a mix of NaN and finite numbers.

    No value of ``x`` is inspected on the host (no synchronisation on a GPU), so the function
    compiles to one graph under ``torch.compile(fullgraph=True)``.

    >>> x = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    >>> spherical_harmonics([0, 1], x)
    tensor([[1.0000, 0.0000, 0.0000, 1.7321],
            [1.0000, 0.0000, 0.0000, 0.0000]], dtype=torch.float64)
    >>> y = spherical_harmonics(4, torch.randn(5, 3, dtype=torch.float64))
    >>> bool(torch.allclose(y.pow(2).sum(-1), torch.full((5,), 9.0, dtype=torch.float64)))
    True
    >>> spherical_harmonics(1, torch.tensor([1e-300, 0.0, 0.0], dtype=torch.float64))
    tensor([1.7321, 0.0000, 0.0000], dtype=torch.float64)
    >>> spherical_harmonics([0, 1], torch.tensor([float("inf"), 1.0, 0.0]))
    tensor([nan, nan, nan, nan])
    """
    ls = _parse_ls(l)
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a torch.Tensor of shape [..., 3], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != 3:
        raise ValueError(f"x must have shape [..., 3], got {tuple(x.shape)}")
    lmax = max(ls)
    batch = x.shape[:-1]
    xf = x.reshape(-1, 3)  # [N, 3]
    N = xf.shape[0]
    autograd = torch.is_grad_enabled() and x.requires_grad  # else in-place operations (fewer buffers)
    if normalize:
        # Divide by the largest |coordinate| s before squaring: |x|^2 itself underflows (all
        # coordinates 1e-300 in float64, 1e-25 in float32) or overflows (1e200, 1e20), x / s
        # cannot.  Column by column ([N] tensors): faster than reductions over a dimension of 3.
        X0, Y0, Z0 = xf.unbind(1)  # [N] each
        s = X0.abs().clamp_min_(Y0.abs()).clamp_min_(Z0.abs())  # [N] max |coordinate|; NaN if x has a NaN
        s.clamp_min_(torch.finfo(x.dtype).tiny)  # (a power of 2: exact) so that x = 0 stays 0 below
        X0, Y0, Z0 = X0 / s, Y0 / s, Z0 / s  # [N] each, max |.| = 1 (NaN where x has an inf)
        n2 = (X0 * X0).addcmul_(Y0, Y0).addcmul_(Z0, Z0)  # [N] |x / s|^2: in [1, 3], 0 at x = 0
        at_zero = n2 == 0  # [N]; True only at x = 0
        # At x = 0 divide by r = inf: the direction is 0 *with zero gradient*, so every l >= 1
        # row and its gradient vanish there (the even-l m = 0 rows also need the mask below).
        r = n2.masked_fill_(at_zero, torch.inf).sqrt_()  # [N] |x / s|
        if autograd:
            xs, ys, zs = X0 / r, Y0 / r, Z0 / r  # [N] each; all NaN if x has an inf or NaN
        else:
            xs, ys, zs = X0.div_(r), Y0.div_(r), Z0.div_(r)
    else:
        xs, ys, zs = xf.T.contiguous()  # [N] each
    X, Y, Z = zs, xs, ys  # relabelled coordinates: the polar axis Z is y
    r2 = None if normalize else X * X + Y * Y + Z * Z  # [N] (|x| = 1 when normalized)
    alpha, beta, diag = _coefficients(lmax)

    # Re and Im of (X + iY)^m, m = 1..lmax
    A, B = [None, X], [None, Y]
    for m in range(1, lmax):
        A.append((X * A[m]).addcmul_(Y, B[m], value=-1))  # X A - Y B (in place on a fresh product)
        B.append((X * B[m]).addcmul_(Y, A[m]))  # X B + Y A

    # q[l][m] = hat q_l^m (a tensor [N], or a python float when it is constant, m = l)
    q = []
    factors = {}  # l -> its 2l+1 rows (m = -l..l), each as a pair of factors (row = a * b)
    ones = (X * 0.0).add_(1.0) if normalize else torch.ones_like(X)  # [N] l = 0 row (NaN where x is inf/NaN)
    # 0 at x = 0, else 1, for the m = 0 rows of even l >= 2, the only rows with a constant term
    # (no data-dependent branch: no host synchronisation, one graph under torch.compile)
    mask = None  # [N]
    if normalize and any(li % 2 == 0 and li > 0 for li in ls):
        mask = torch.where(at_zero, 0.0, xf.new_ones(()))  # (a 0-d tensor keeps x's dtype)
    for li in range(lmax + 1):
        ql = []
        for m in range(li + 1):
            if m == li:
                ql.append(diag[li])
            elif m == li - 1:
                ql.append(Z * (alpha[li][m] * diag[m]))
            else:
                prev2 = q[li - 2][m]
                if r2 is not None:
                    prev2 = r2 * prev2
                if isinstance(prev2, float):
                    ql.append((Z * q[li - 1][m]).mul_(alpha[li][m]).sub_(beta[li][m] * prev2))
                else:
                    ql.append((prev2 * -beta[li][m]).addcmul_(Z, q[li - 1][m], value=alpha[li][m]))
        q.append(ql)
        if li in ls:
            # m = 0 row: q_l^0; at x = 0 (Z = 0, r^2 taken as 1) it is 0 for odd l, the mask zeroes even l
            zero = (ones, 1.0) if li == 0 else (ql[0], mask if mask is not None and li % 2 == 0 else 1.0)
            neg = [(B[m], ql[m]) for m in range(li, 0, -1)]
            pos = [(A[m], ql[m]) for m in range(1, li + 1)]
            factors[li] = neg + [zero] + pos
        if li >= 2:
            q[li - 2] = None  # no longer needed

    rows = [ab for li in ls for ab in factors[li]]
    if autograd or torch.compiler.is_compiling():
        out = torch.stack([a * b for a, b in rows], dim=-1)  # [N, dim]
    else:  # same values, each column written straight into the output (out= has no autograd,
        # and torch.compile does not trace it; there the compiler fuses the stack anyway)
        out = torch.empty(N, len(rows), dtype=x.dtype, device=x.device)  # [N, dim]
        for i, (a, b) in enumerate(rows):
            torch.mul(a, b, out=out[:, i])
    if normalization != "component":
        scale = [1 / math.sqrt(4 * math.pi if normalization == "integral" else 2 * li + 1)
                 for li in ls for _ in range(2 * li + 1)]
        out = out * torch.tensor(scale, dtype=x.dtype, device=x.device)
    return out.reshape(*batch, out.shape[-1])


class SphericalHarmonics(torch.nn.Module):
    r"""Module form of :func:`spherical_harmonics`: ``x`` ``[..., 3]`` -> ``[..., sum(2l+1)]``.

    ``ls`` is an int ``lmax`` (meaning ``l = 0..lmax``) or a list of degrees.

    >>> sh = SphericalHarmonics(2)
    >>> sh(torch.randn(7, 3)).shape
    torch.Size([7, 9])
    """

    def __init__(self, ls, normalize: bool = True, normalization: str = "component"):
        super().__init__()
        if isinstance(ls, (list, tuple)):
            self.ls = _parse_ls(ls)
        else:
            self.ls = list(range(_check_l(ls, "lmax") + 1))
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        self.normalize = normalize
        self.normalization = normalization

    def forward(self, x):
        return spherical_harmonics(self.ls, x, self.normalize, self.normalization)

    def extra_repr(self):
        return f"ls={self.ls}, normalize={self.normalize}, normalization={self.normalization!r}"
