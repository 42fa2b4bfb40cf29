r"""Exact (sympy) derivation of the radial basis and the smooth cutoff of :mod:`minequi.radial`.

1. :func:`polynomial_envelope` *derives* the envelope: the ansatz
   :math:`u(d) = 1 + a\,d^p + b\,d^{p+1} + c\,d^{p+2}` (``u(0) = 1`` and the first
   ``p - 1`` derivatives vanish at 0) and the three linear conditions
   :math:`u(1) = u'(1) = u''(1) = 0` fix ``a, b, c``.  Solved once for a
   *symbolic* ``p``, this gives DimeNet's coefficients
   :math:`a = -(p+1)(p+2)/2,\ b = p(p+2),\ c = -p(p+1)/2` for every ``p``.
2. :func:`check_envelope` proves the three conditions for a given ``p`` by
   substituting ``d = 1`` into the exact derivatives, and that the function is 1
   at 0.
3. :func:`bessel_basis` is :math:`e_n(r) = \sqrt{2/c}\,\sin(n\pi r/c)/r`;
   :func:`bessel_limit_at_zero` its limit at ``r = 0``; :func:`bessel_gram`
   the exact Gram matrix :math:`\int_0^c e_n e_m r^2 dr` (the identity).

>>> u = polynomial_envelope(6)
>>> u
-21*d**8 + 48*d**7 - 28*d**6 + 1
>>> check_envelope(6)
{'u(0)': 1, 'u(1)': 0, "u'(1)": 0, "u''(1)": 0}
"""
from __future__ import annotations

import sympy as sp

__all__ = [
    "d",
    "r",
    "envelope_coefficients",
    "polynomial_envelope",
    "check_envelope",
    "bessel_basis",
    "bessel_limit_at_zero",
    "bessel_gram",
]

d = sp.Symbol("d", nonnegative=True)  # r / cutoff
r = sp.Symbol("r", positive=True)


def envelope_coefficients(p=None):
    r"""Solve :math:`u(1) = u'(1) = u''(1) = 0` for :math:`u = 1 + a d^p + b d^{p+1} + c d^{p+2}`.

    ``p=None`` solves for a symbolic positive integer ``p``; the result is a dict
    ``{a: ..., b: ..., c: ...}`` of sympy expressions.

    >>> sol = envelope_coefficients()
    >>> [sp.factor(sol[k]) for k in sp.symbols("a b c")]
    [-(p + 1)*(p + 2)/2, p*(p + 2), -p*(p + 1)/2]
    """
    p = sp.Symbol("p", positive=True, integer=True) if p is None else sp.Integer(p)
    a, b, c = sp.symbols("a b c")
    u = 1 + a * d**p + b * d ** (p + 1) + c * d ** (p + 2)
    conditions = [sp.diff(u, d, k).subs(d, 1) for k in range(3)]
    sol = sp.solve(conditions, [a, b, c], dict=True)
    if len(sol) != 1:
        raise RuntimeError(f"expected a unique solution, got {sol}")
    return {k: sp.simplify(v) for k, v in sol[0].items()}


def polynomial_envelope(p: int = 6) -> sp.Expr:
    """The envelope :math:`u(d)` (``d = r / cutoff``, valid for ``0 <= d < 1``) for integer ``p``, derived."""
    sol = envelope_coefficients(p)
    a, b, c = sp.symbols("a b c")
    return sp.expand(1 + sol[a] * d**p + sol[b] * d ** (p + 1) + sol[c] * d ** (p + 2))


def check_envelope(p: int = 6) -> dict:
    """Exact values ``u(0)``, ``u(1)``, ``u'(1)``, ``u''(1)`` of the derived envelope (1, 0, 0, 0)."""
    u = polynomial_envelope(p)
    return {
        "u(0)": u.subs(d, 0),
        "u(1)": sp.simplify(u.subs(d, 1)),
        "u'(1)": sp.simplify(sp.diff(u, d).subs(d, 1)),
        "u''(1)": sp.simplify(sp.diff(u, d, 2).subs(d, 1)),
    }


def bessel_basis(n: int, cutoff) -> sp.Expr:
    r""":math:`e_n(r) = \sqrt{2/c}\,\sin(n\pi r/c)/r` (DimeNet eq. 7) as a sympy expression in :data:`r`.

    >>> bessel_basis(1, 5)
    sqrt(10)*sin(pi*r/5)/(5*r)
    """
    c = sp.nsimplify(cutoff)
    return sp.sqrt(2 / c) * sp.sin(n * sp.pi * r / c) / r


def bessel_limit_at_zero(n: int, cutoff) -> sp.Expr:
    r""":math:`\lim_{r \to 0} e_n(r) = \sqrt{2/c}\; n\pi/c`.

    >>> bessel_limit_at_zero(2, 5)
    2*sqrt(10)*pi/25
    """
    return sp.limit(bessel_basis(n, cutoff), r, 0)


def bessel_gram(num_basis: int, cutoff) -> sp.Matrix:
    r"""The exact matrix :math:`G_{nm} = \int_0^c e_n(r) e_m(r)\, r^2\, dr` (orthonormality: the identity).

    >>> bessel_gram(3, 2) == sp.eye(3)
    True
    """
    c = sp.nsimplify(cutoff)
    e = [bessel_basis(n, cutoff) for n in range(1, num_basis + 1)]
    return sp.Matrix(num_basis, num_basis, lambda i, j: sp.integrate(sp.expand(e[i] * e[j] * r**2), (r, 0, c)))
