r"""Exact (sympy) group convolution on p4 and p4m, straight from the definitions.

Everything here is written with 3x3 integer matrices and dictionaries, with no
``rot90`` and no multiplication table borrowed from the numeric library, so that
:mod:`minequi.groupconv` can be tested against it.

* An element of p4m is :math:`g = (t, h)` with the 3x3 matrix
  :math:`\begin{pmatrix} h & t \\ 0 & 1 \end{pmatrix}`, ``h`` one of the integer
  matrices :math:`R(\pi k/2) M^s` in the order of :mod:`minequi.conventions`
  (``k + 4 s``); composition is the matrix product, and ``g`` acts on the point
  ``x`` of the plane through the homogeneous vector ``(x, y, 1)``.
* A function on :math:`\mathbb{Z}^2` (an image, a filter) is a ``dict``
  ``{(x, y): value}`` with finite support; missing keys are zero.
* A function on p4m is a ``dict`` ``{(x, y, v): value}`` with ``v`` the index of
  the point-group element.
* Pixel ``[i, j]`` of an ``H x W`` array sits at ``x = j - (W-1)/2``,
  ``y = (H-1)/2 - i`` (x to the right, y upwards), as in :mod:`minequi.groupconv`.

>>> g = element(1, (2, 0))                      # (t, h) = ((2, 0), r)
>>> act(g, (1, 0))                              # r (1, 0) + (2, 0)
(2, 1)
>>> point_names("p4m")[point_index(point_matrix(1) * point_matrix(4))]
'r m'
"""
from __future__ import annotations

import sympy as sp

__all__ = [
    "point_matrix",
    "point_elements",
    "point_names",
    "point_index",
    "point_table",
    "element",
    "act",
    "act_image",
    "act_group_function",
    "lifting_correlation",
    "group_correlation",
    "array_to_function",
    "function_to_array",
    "transform_filter",
    "transform_group_filter",
]


def _order(group: str) -> int:
    if group not in ("p4", "p4m"):
        raise ValueError(f"group must be 'p4' or 'p4m', got {group!r}")
    return 4 if group == "p4" else 8


def point_matrix(h: int) -> sp.Matrix:
    r"""The 2x2 integer matrix :math:`R(\pi k/2) M^s` of point-group element ``h = k + 4 s``.

    >>> point_matrix(1)
    Matrix([
    [0, -1],
    [1,  0]])
    """
    if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < 8:
        raise ValueError(f"h must be an int in [0, 8), got {h!r}")
    k, s = h % 4, h // 4
    R = sp.Matrix([[0, -1], [1, 0]]) ** k
    M = sp.Matrix([[1, 0], [0, -1]]) ** s
    return R * M


# index of each point-group matrix, keyed by its four entries (a lookup table built once from point_matrix)
_INDEX = {tuple(point_matrix(h)): h for h in range(8)}


def point_elements(group: str) -> list:
    """The point group's matrices in the order of :mod:`minequi.conventions`."""
    return [point_matrix(h) for h in range(_order(group))]


def point_names(group: str) -> tuple:
    names = ("e", "r", "r^2", "r^3", "m", "r m", "r^2 m", "r^3 m")
    return names[: _order(group)]


def point_index(M: sp.Matrix) -> int:
    """The index ``k + 4 s`` of a 2x2 point-group matrix (or of the 2x2 block of a 3x3 element)."""
    key = (M[0, 0], M[0, 1], M[1, 0], M[1, 1])
    if key not in _INDEX:
        raise ValueError(f"not an element of D4: {M}")
    return _INDEX[key]


def point_table(group: str) -> list:
    """Multiplication table ``table[a][b]`` = index of :math:`h_a h_b`, from the matrices."""
    els = point_elements(group)
    return [[point_index(a * b) for b in els] for a in els]


def element(h: int, t=(0, 0)) -> sp.Matrix:
    r"""The 3x3 matrix of :math:`g = (t, h)`: :math:`x \mapsto h x + t`."""
    M = point_matrix(h)
    return sp.Matrix([[M[0, 0], M[0, 1], t[0]], [M[1, 0], M[1, 1], t[1]], [0, 0, 1]])


def _affine(g: sp.Matrix):
    """The entries (a, b, c, d, tx, ty) of g = [[a, b, tx], [c, d, ty], [0, 0, 1]] (fast integer arithmetic)."""
    return g[0, 0], g[0, 1], g[1, 0], g[1, 1], g[0, 2], g[1, 2]


def act(g: sp.Matrix, x) -> tuple:
    """The point ``g x`` (``x`` a pair)."""
    a, b, c, d, tx, ty = _affine(g)
    return (a * x[0] + b * x[1] + tx, c * x[0] + d * x[1] + ty)


def act_image(g: sp.Matrix, f: dict) -> dict:
    r""":math:`(L_g f)(x) = f(g^{-1} x)` for a function ``{(x, y): value}`` on the plane."""
    return {act(g, x): val for x, val in f.items()}


def _left_mult(g: sp.Matrix) -> tuple:
    """For each v, the point index of h_g h_v (g's 2x2 block times element v), from the matrices."""
    block = sp.Matrix(g)[:2, :2]
    return tuple(point_index(block * point_matrix(v)) for v in range(8))


def act_group_function(g: sp.Matrix, F: dict) -> dict:
    r""":math:`(L_g F)(a) = F(g^{-1} a)` for a function ``{(x, y, v): value}`` on p4(m).

    The element :math:`a = (y, h_v)` is the matrix ``element(v, y)``, and
    :math:`g a = (h_g y + t_g,\; h_g h_v)` is the matrix product.
    """
    mult = _left_mult(g)
    return {act(g, (x, y)) + (mult[v],): val for (x, y, v), val in F.items()}


def lifting_correlation(f: dict, psi: dict, g: sp.Matrix):
    r""":math:`[f \star \psi](g) = \sum_y f(y)\, \psi(g^{-1} y)` (Cohen & Welling 2016, eq. 10)."""
    gi = g.inv()
    return sp.expand(sum((val * psi.get(act(gi, y), 0) for y, val in f.items()), sp.Integer(0)))


def group_correlation(F: dict, Psi: dict, g: sp.Matrix):
    r""":math:`[F \star \Psi](g) = \sum_{a} F(a)\, \Psi(g^{-1} a)` over p4(m) (Cohen & Welling 2016, eq. 11)."""
    gi = g.inv()
    mult = _left_mult(gi)
    total = sp.Integer(0)
    for (x, y, v), val in F.items():
        total += val * Psi.get(act(gi, (x, y)) + (mult[v],), 0)
    return sp.expand(total)


def _centre(n: int):
    return sp.Rational(n - 1, 2)


def array_to_function(A: sp.Matrix) -> dict:
    """An ``H x W`` sympy Matrix as a function ``{(x, y): A[i, j]}`` (x right, y up, origin at the centre)."""
    H, W = A.shape
    return {(j - _centre(W), _centre(H) - i): A[i, j] for i in range(H) for j in range(W)}


def function_to_array(f: dict, H: int, W: int) -> sp.Matrix:
    """Sample a function on the plane on the ``H x W`` pixel grid (the inverse of :func:`array_to_function`)."""
    return sp.Matrix(H, W, lambda i, j: f.get((j - _centre(W), _centre(H) - i), 0))


def transform_filter(psi: sp.Matrix, h: int) -> sp.Matrix:
    r"""The lifting layer's filter for output element ``h``: :math:`L_h \psi`, as a ``k x k`` Matrix."""
    k = psi.shape[0]
    return function_to_array(act_image(element(h), array_to_function(psi)), k, k)


def transform_group_filter(psi: list, u: int, group: str) -> list:
    r"""The group layer's filter for output element ``u``: :math:`(L_u \Psi)(x, v) = \Psi(u^{-1} x, u^{-1} v)`.

    ``psi`` is a list of ``|G|`` ``k x k`` Matrices (slice ``v`` of the filter);
    the result has the same form.
    """
    n = _order(group)
    if len(psi) != n:
        raise ValueError(f"psi must hold |G|={n} slices for {group}, got {len(psi)}")
    k = psi[0].shape[0]
    F = {}
    for v, slice_v in enumerate(psi):
        for (x, y), val in array_to_function(slice_v).items():
            F[(x, y, v)] = val
    G = act_group_function(element(u), F)
    return [
        sp.Matrix(k, k, lambda i, j: G.get((j - _centre(k), _centre(k) - i, v), 0)) for v in range(n)
    ]
