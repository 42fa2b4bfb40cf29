r"""Radial functions of edge lengths: DimeNet's Bessel basis and its polynomial envelope.

A rotation-invariant edge feature is a function of the length :math:`r = |x_i - x_j|`.
Networks expand :math:`r` in a fixed basis and let an MLP combine the basis
values.  DimeNet (Klicpera, Gross & Günnemann, 2020, eq. 7) uses the zeroth-order
spherical Bessel functions whose value vanishes at the cutoff :math:`c`:

.. math:: e_n(r) = \sqrt{\frac{2}{c}}\, \frac{\sin(n \pi r / c)}{r}, \qquad n = 1, \dots, N_\text{basis},

orthonormal on the ball of radius :math:`c` (:math:`\int_0^c e_n e_m\, r^2\, dr = \delta_{nm}`),
with the finite limit :math:`e_n(0) = \sqrt{2/c}\; n\pi/c`.

Multiplying by a *smooth cutoff* makes the edge's contribution go to zero, with
its first two derivatives, as the neighbour leaves the cutoff sphere, so that
energies, forces (first derivatives) and their derivatives (second derivatives,
used when training on forces) are continuous when the graph changes.  With
:math:`d = r / c` and an integer ``p``, the envelope of DimeNet (eq. 8, there
divided by :math:`d` and merged with the :math:`1/r` of the basis) and NequIP is

.. math:: u(d) = 1 - \frac{(p+1)(p+2)}{2} d^p + p(p+2) d^{p+1} - \frac{p(p+1)}{2} d^{p+2}
          \quad (d < 1), \qquad u(d) = 0 \quad (d \ge 1),

the unique polynomial :math:`1 + a d^p + b d^{p+1} + c d^{p+2}` with
:math:`u(1) = u'(1) = u''(1) = 0` (derived and proved in :mod:`minequi.symbolic.radial`).

>>> import torch
>>> r = torch.tensor([0.0, 1.0, 4.99, 6.0], dtype=torch.float64)
>>> (BesselBasis(num_basis=4, cutoff=5.0)(r) * PolynomialCutoff(5.0)(r)[:, None]).shape
torch.Size([4, 4])
>>> [f"{u:.3g}" for u in PolynomialCutoff(5.0)(r).tolist()]
['1', '0.999', '4.45e-07', '0']
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BesselBasis", "PolynomialCutoff"]


def _check_r(r, name: str = "r") -> None:
    if not torch.is_tensor(r):
        raise TypeError(f"{name} must be a torch.Tensor of edge lengths [E], got {type(r).__name__}")
    if not r.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor [E], got dtype {r.dtype}")


def _sin_over_x(x: torch.Tensor) -> torch.Tensor:
    """sin(x) / x with the value 1 at 0, and finite first *and second* derivatives everywhere.

    (``torch.sinc`` has a NaN second derivative at 0.)  Below ``|x| = 1e-2`` the
    Taylor polynomial ``1 - x^2/6 + x^4/120`` is used (truncation error < 3e-16).
    """
    small = x.abs() < 1e-2  # [...]
    x_safe = torch.where(small, torch.ones_like(x), x)  # [...] no 0/0 in either branch
    x2 = x * x  # [...]
    return torch.where(small, 1 - x2 / 6 + x2 * x2 / 120, torch.sin(x_safe) / x_safe)  # [...]


def _check_cutoff(cutoff) -> float:
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not (0 < cutoff < math.inf):
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff!r}")
    return float(cutoff)


class BesselBasis(nn.Module):
    r"""DimeNet's radial Bessel basis :math:`e_n(r) = \sqrt{2/c}\,\sin(n\pi r/c)/r` (Klicpera et al. 2020, eq. 7).

    ``forward(r [...]) -> [..., num_basis]``.  Written as
    :math:`\sqrt{2/c}\; w_n \cdot \sin(w_n r) / (w_n r)` with the frequencies
    :math:`w_n = n\pi/c`, and ``sin(x)/x`` evaluated by a Taylor polynomial near 0,
    so the value at :math:`r = 0` is the exact limit :math:`\sqrt{2/c}\, n\pi/c`
    and the first and second derivatives there are finite (the first is zero).
    With ``trainable=True`` the frequencies :math:`w_n` are parameters (as in
    DimeNet and NequIP), initialised at :math:`n\pi/c`.
    The basis is not cut off at :math:`c` by itself (it is zero there only while
    the frequencies are the initial ones): multiply by :class:`PolynomialCutoff`.

    >>> basis = BesselBasis(num_basis=3, cutoff=5.0)
    >>> basis(torch.tensor([0.0, 2.5], dtype=torch.float64)).round(decimals=4) + 0.0  # (+ 0.0 turns -0.0 into 0.0)
    tensor([[ 0.3974,  0.7948,  1.1922],
            [ 0.2530,  0.0000, -0.2530]], dtype=torch.float64)
    """

    def __init__(self, num_basis: int = 8, cutoff: float = 5.0, trainable: bool = False):
        super().__init__()
        if isinstance(num_basis, bool) or not isinstance(num_basis, int) or num_basis < 1:
            raise ValueError(f"num_basis must be a positive int, got {num_basis!r}")
        self.num_basis = num_basis
        self.cutoff = _check_cutoff(cutoff)
        self.trainable = bool(trainable)
        if self.trainable:
            w = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * (math.pi / self.cutoff)  # [num_basis]
            self.frequencies = nn.Parameter(w)

    def _frequencies(self, r: torch.Tensor) -> torch.Tensor:
        """The w_n in r's dtype: the parameter, or n pi / c computed in that dtype (no float32 rounding)."""
        if self.trainable:
            return self.frequencies.to(r.dtype)  # [num_basis]
        n = torch.arange(1, self.num_basis + 1, dtype=r.dtype, device=r.device)  # [num_basis]
        return n * (math.pi / self.cutoff)  # [num_basis]

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        _check_r(r)
        w = self._frequencies(r)  # [num_basis]
        return math.sqrt(2.0 / self.cutoff) * w * _sin_over_x(r[..., None] * w)  # [..., num_basis]

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}, cutoff={self.cutoff}, trainable={self.trainable}"


class PolynomialCutoff(nn.Module):
    r"""The polynomial envelope :math:`u(r/c)` of DimeNet (Klicpera et al. 2020, eq. 8) and NequIP.

    .. math:: u(d) = 1 - \tfrac{(p+1)(p+2)}{2} d^p + p(p+2) d^{p+1} - \tfrac{p(p+1)}{2} d^{p+2}, \quad d = r/c < 1,

    and exactly ``0`` for :math:`r \ge c`.  :math:`u(0) = 1`, and
    :math:`u, u', u''` all vanish at :math:`r = c` (proved with sympy in
    :func:`minequi.symbolic.radial.polynomial_envelope`), so the product with any
    smooth radial basis is :math:`C^2` across the cutoff.  ``forward(r [...]) -> [...]``.
    ``p`` is DimeNet's ``p`` (their default exponent 5 gives ``p = 6``).

    >>> PolynomialCutoff(cutoff=2.0, p=6)(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    tensor([1.0000, 0.8555, 0.0000, 0.0000])
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = _check_cutoff(cutoff)
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"p must be a positive int, got {p!r}")
        self.p = p

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        _check_r(r)
        p = self.p
        d = r / self.cutoff  # [...]
        dp = d.pow(p)  # [...]
        u = 1 - 0.5 * (p + 1) * (p + 2) * dp + p * (p + 2) * dp * d - 0.5 * p * (p + 1) * dp * d * d  # [...]
        return torch.where(d < 1, u, torch.zeros_like(u))  # [...]

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, p={self.p}"
