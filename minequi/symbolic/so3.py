r"""Exact (sympy) representation theory of SO(2), SO(3) and O(3).

Everything here is exact: rational numbers, square roots of rationals, and
symbolic angles.  The numeric library (:mod:`minequi.so3`,
:mod:`minequi.spherical_harmonics`, :mod:`minequi.clebsch_gordan`) is tested
against these derivations, and the chapter *Continuous groups: SO(2) and SO(3)*
walks through them.  The conventions are those of :mod:`minequi.conventions`.

Read top to bottom:

1. **SO(2)**: the generator :math:`J`, :math:`R(\theta) = e^{\theta J}`, the real
   irreps :math:`\rho_k(\theta) = R(k\theta)` and their diagonalisation over
   :math:`\mathbb{C}` into the characters :math:`e^{\pm ik\theta}`.
2. **so(3)**: the generators :math:`G_x, G_y, G_z` (:math:`(G_a)_{bc} = -\epsilon_{abc}`),
   :math:`[G_x, G_y] = G_z` and cyclic, and :math:`e^{\theta G_a}` = the rotation
   by :math:`\theta` about axis :math:`a`.
3. **Real spherical harmonics** :math:`Y_{lm}(x, y, z)`, as homogeneous harmonic
   polynomials (i.e. :math:`r^l Y_{lm}(\hat x)`), obtained from sympy's complex
   ``Ynm`` (Condon-Shortley phase included) by the real-basis rule of
   :mod:`minequi.conventions` and the relabelling
   :math:`Y_{lm}(x, y, z) = S_{lm}(z, x, y)` (polar axis *y*, so that
   :math:`D^1(R) = R`).
4. **Generators of irrep l**, defined by :math:`\nabla Y(x) \cdot (G_a x) = J_a Y(x)`.
5. **Wigner D**, defined by :math:`Y(R x) = D^l(R)\, Y(x)`.
6. **Clebsch-Gordan** tensors as the null space of
   :math:`(J^{l_1}_a \otimes I + I \otimes J^{l_2}_a)\, C = C\, J^{l_3}_a`.

How the linear algebra stays exact and fast: each harmonic is a positive
constant times a polynomial with *rational* coefficients,
:math:`Y_{lm} = k_{lm} P_{lm}` with :math:`k_{lm} = \sqrt{q_{lm}/\pi}`,
:math:`q_{lm} \in \mathbb{Q}`.  Generators, Wigner matrices and CG tensors are
first computed in the rational basis :math:`P` (pure rational arithmetic) and
then conjugated by the diagonal matrix of the :math:`k_{lm}`.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp
from sympy.polys.matrices import DomainMatrix

__all__ = [
    "x", "y", "z", "theta",
    # SO(2)
    "so2_generator", "so2_rotation", "so2_irrep", "so2_diagonalizer",
    # so(3) and rotations
    "rotation_x", "rotation_y", "rotation_z", "lie_algebra_generators", "commutator",
    "rotation_from_quaternion",
    # harmonics and representations
    "real_spherical_harmonic", "real_spherical_harmonics", "laplacian",
    "so3_generators", "casimir", "wigner_D", "clebsch_gordan", "to_numpy",
]

x, y, z = sp.symbols("x y z", real=True)
theta = sp.Symbol("theta", real=True)
_XYZ = (x, y, z)


# ----------------------------------------------------------------------------
# 1. SO(2)
# ----------------------------------------------------------------------------
def so2_generator() -> sp.Matrix:
    r"""The generator :math:`J = \begin{pmatrix} 0 & -1 \\ 1 & 0 \end{pmatrix}` of SO(2).

    It is the derivative at :math:`\theta = 0` of :math:`R(\theta)` and
    :math:`J^2 = -I`, so :math:`e^{\theta J} = \cos\theta\, I + \sin\theta\, J`.

    >>> so2_generator() ** 2 == -sp.eye(2)
    True
    """
    return sp.Matrix([[0, -1], [1, 0]])


def so2_rotation(angle=theta) -> sp.Matrix:
    r"""The counter-clockwise rotation :math:`R(\theta) = e^{\theta J}` of the plane.

    Computed as a matrix exponential and simplified; equals
    :math:`\begin{pmatrix} \cos\theta & -\sin\theta \\ \sin\theta & \cos\theta \end{pmatrix}`.

    >>> so2_rotation()
    Matrix([
    [cos(theta), -sin(theta)],
    [sin(theta),  cos(theta)]])
    """
    R = (angle * so2_generator()).exp()
    return R.applyfunc(lambda e: sp.simplify(e.rewrite(sp.cos)))


def so2_irrep(k: int, angle=theta) -> sp.Matrix:
    r"""The real irrep of SO(2) of frequency ``k >= 0``.

    ``k = 0`` is the trivial 1x1 irrep; ``k >= 1`` is the 2x2 matrix
    :math:`\rho_k(\theta) = R(k\theta)`.  Over :math:`\mathbb{C}`, :math:`\rho_k`
    splits into the two characters :math:`e^{ik\theta}` and :math:`e^{-ik\theta}`
    (see :func:`so2_diagonalizer`); over :math:`\mathbb{R}` it is irreducible for
    ``k >= 1`` because no line of the plane is invariant under a nontrivial
    rotation.

    >>> so2_irrep(0)
    Matrix([[1]])
    >>> so2_irrep(2)
    Matrix([
    [cos(2*theta), -sin(2*theta)],
    [sin(2*theta),  cos(2*theta)]])
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if k == 0:
        return sp.Matrix([[1]])
    c, s = sp.cos(k * angle), sp.sin(k * angle)  # = so2_rotation(k * angle), written out
    return sp.Matrix([[c, -s], [s, c]])


def so2_diagonalizer() -> sp.Matrix:
    r"""The unitary :math:`U` with :math:`U^\dagger \rho_k(\theta) U = \mathrm{diag}(e^{ik\theta}, e^{-ik\theta})`.

    Its columns are the eigenvectors :math:`(1, -i)/\sqrt2` (eigenvalue
    :math:`i` of :math:`J`) and :math:`(1, i)/\sqrt2` (eigenvalue :math:`-i`);
    the same :math:`U` works for every frequency ``k``.

    >>> U = so2_diagonalizer()
    >>> (U.H * so2_irrep(3) * U).applyfunc(lambda e: sp.simplify(e.rewrite(sp.exp)))
    Matrix([
    [exp(3*I*theta),               0],
    [             0, exp(-3*I*theta)]])
    """
    return sp.Matrix([[1, 1], [-sp.I, sp.I]]) / sp.sqrt(2)


# ----------------------------------------------------------------------------
# 2. The Lie algebra so(3) and rotations
# ----------------------------------------------------------------------------
def rotation_x(angle=theta) -> sp.Matrix:
    """Rotation by ``angle`` about the x axis (counter-clockwise looking down the axis).

    >>> rotation_x(sp.pi / 2) * sp.Matrix([0, 1, 0])
    Matrix([
    [0],
    [0],
    [1]])
    """
    c, s = sp.cos(angle), sp.sin(angle)
    return sp.Matrix([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(angle=theta) -> sp.Matrix:
    """Rotation by ``angle`` about the y axis (takes z to x for a quarter turn).

    >>> rotation_y(sp.pi / 2) * sp.Matrix([0, 0, 1])
    Matrix([
    [1],
    [0],
    [0]])
    """
    c, s = sp.cos(angle), sp.sin(angle)
    return sp.Matrix([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rotation_z(angle=theta) -> sp.Matrix:
    """Rotation by ``angle`` about the z axis (takes x to y for a quarter turn).

    >>> rotation_z(sp.pi / 2) * sp.Matrix([1, 0, 0])
    Matrix([
    [0],
    [1],
    [0]])
    """
    c, s = sp.cos(angle), sp.sin(angle)
    return sp.Matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def lie_algebra_generators() -> tuple[sp.Matrix, sp.Matrix, sp.Matrix]:
    r"""The generators :math:`(G_x, G_y, G_z)` of so(3): :math:`(G_a)_{bc} = -\epsilon_{abc}`.

    :math:`G_a x = e_a \times x` (the infinitesimal rotation about axis
    :math:`a`), :math:`[G_x, G_y] = G_z` (and cyclic), and
    :math:`e^{\theta G_a}` is the rotation by :math:`\theta` about axis :math:`a`.

    >>> Gx, Gy, Gz = lie_algebra_generators()
    >>> Gz
    Matrix([
    [0, -1, 0],
    [1,  0, 0],
    [0,  0, 0]])
    >>> commutator(Gx, Gy) == Gz and commutator(Gy, Gz) == Gx and commutator(Gz, Gx) == Gy
    True
    """
    return tuple(
        sp.Matrix(3, 3, lambda b, c: -sp.LeviCivita(a, b, c)) for a in range(3)
    )


def commutator(A: sp.Matrix, B: sp.Matrix) -> sp.Matrix:
    """The matrix commutator ``[A, B] = A B - B A`` (expanded).

    >>> commutator(sp.eye(2), so2_generator())
    Matrix([
    [0, 0],
    [0, 0]])
    """
    return (A * B - B * A).applyfunc(sp.expand)


def rotation_from_quaternion(a, b, c, d) -> sp.Matrix:
    r"""The exact rotation matrix of the (not necessarily unit) quaternion :math:`a + bi + cj + dk`.

    With integer arguments the result is a *rational* rotation matrix, handy
    for exact tests.  It is the same formula as :func:`minequi.testing.rand_rotation`
    (``w, x, y, z = a, b, c, d``) divided by :math:`a^2+b^2+c^2+d^2`.

    >>> R = rotation_from_quaternion(1, 1, 1, 1)  # 120 degrees about (1, 1, 1)
    >>> R
    Matrix([
    [0, 0, 1],
    [1, 0, 0],
    [0, 1, 0]])
    >>> Q = rotation_from_quaternion(1, 2, 3, 4)
    >>> Q * Q.T == sp.eye(3) and Q.det() == 1
    True
    """
    a, b, c, d = (sp.sympify(v) for v in (a, b, c, d))
    n = a**2 + b**2 + c**2 + d**2
    if n == 0:
        raise ValueError("rotation_from_quaternion: the quaternion must be nonzero")
    return sp.Matrix([
        [a**2 + b**2 - c**2 - d**2, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a**2 - b**2 + c**2 - d**2, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a**2 - b**2 - c**2 + d**2],
    ]) / n


# ----------------------------------------------------------------------------
# 3. Real spherical harmonics as harmonic polynomials
# ----------------------------------------------------------------------------
def _check_l(l):
    if not isinstance(l, int) or isinstance(l, bool) or l < 0:
        raise ValueError(f"l must be a non-negative int, got {l!r}")


@lru_cache(maxsize=None)
def _complex_harmonic_polynomial(l: int, m: int) -> sp.Expr:
    r""":math:`r^l Y_l^m` (sympy's ``Ynm``, Condon-Shortley phase included) as a polynomial in x, y, z, ``m >= 0``.

    ``Ynm(l, m, theta, phi).expand(func=True)`` is a polynomial in
    :math:`\sin\theta, \cos\theta, e^{i\phi}`; substituting
    :math:`\cos\theta = z/r`, :math:`\sin\theta = \rho/r`,
    :math:`e^{i\phi} = (x + iy)/\rho` (with :math:`\rho^2 = x^2+y^2`) and
    multiplying by :math:`r^l` leaves a polynomial once the fraction is cancelled.
    """
    th, ph = sp.symbols("theta phi", real=True)
    r, rho = sp.symbols("r rho", positive=True)
    e = sp.Ynm(l, m, th, ph).expand(func=True)
    if m:
        e = e.subs(sp.exp(sp.I * m * ph), ((x + sp.I * y) / rho) ** m)
    e = e.subs({sp.sin(th): rho / r, sp.cos(th): z / r})
    e = sp.expand(e * r**l)
    e = e.subs({rho: sp.sqrt(x**2 + y**2), r: sp.sqrt(x**2 + y**2 + z**2)})
    e = sp.expand(sp.cancel(sp.together(e)))
    assert not e.has(th, ph, r, rho), e
    return e


def _textbook_real_polynomial(l: int, m: int) -> sp.Expr:
    r""":math:`r^l S_{lm}`: the textbook real harmonic, polar axis z (see :mod:`minequi.conventions`)."""
    if m == 0:
        return _complex_harmonic_polynomial(l, 0)
    Ylm = _complex_harmonic_polynomial(l, abs(m))
    part = sp.im(Ylm) if m < 0 else sp.re(Ylm)
    return sp.expand(sp.sqrt(2) * sp.Integer(-1) ** m * part)


@lru_cache(maxsize=None)
def _rational_basis(l: int):
    r"""The harmonics of degree ``l`` in the form :math:`Y_{lm} = \sqrt{q_m/\pi}\; P_m` (integral normalisation).

    Returns ``(q, P, M, pivots, A_inv)``:

    * ``q``: tuple of positive rationals :math:`q_m`;
    * ``P``: tuple of polynomials in x, y, z with rational coefficients;
    * ``M``: the ``(2l+1) x n_monomials`` rational coefficient matrix of ``P``
      (monomials in sympy's ``Poly.monoms`` order of :func:`_monomials`);
    * ``pivots`` and ``A_inv``: ``2l+1`` monomial columns in which ``M`` is
      invertible, and the inverse of that square block.  A polynomial vector
      ``T P`` is then recovered from its coefficients ``N`` as
      ``T = N[:, pivots] * A_inv``.
    """
    monos = _monomials(l)
    q, P = [], []
    for m in range(-l, l + 1):
        S = _textbook_real_polynomial(l, m)
        Y = S.subs({x: z, y: x, z: y}, simultaneous=True)  # Y_lm(x, y, z) = S_lm(z, x, y)
        coeffs = sp.Poly(Y, *_XYZ).as_dict()
        lead = coeffs[max(coeffs)]  # some nonzero coefficient, of the form rational * sqrt(q / pi)
        k2 = sp.radsimp(lead**2 * sp.pi)  # a positive rational
        assert k2.is_Rational and k2 > 0, (l, m, k2)
        k = sp.sqrt(k2) / sp.sqrt(sp.pi)
        Pm = sp.expand(Y / k)
        assert all(c.is_Rational for c in sp.Poly(Pm, *_XYZ).coeffs()), (l, m, Pm)
        q.append(k2)
        P.append(Pm)
    M = _coefficient_matrix(P, monos)
    _, pivots = M.rref()
    A_inv = M[:, list(pivots)].inv()
    return tuple(q), tuple(P), M, tuple(pivots), A_inv


@lru_cache(maxsize=None)
def _monomials(l: int):
    """The monomials of degree ``l`` in x, y, z, as exponent tuples, in a fixed order."""
    return tuple((a, b, l - a - b) for a in range(l, -1, -1) for b in range(l - a, -1, -1))


def _coefficient_matrix(polys, monos) -> sp.Matrix:
    """Rows: the coefficients of each polynomial on the monomials ``monos``."""
    rows = []
    for p in polys:
        d = sp.Poly(p, *_XYZ).as_dict() if p != 0 else {}
        rows.append([d.get(mono, 0) for mono in monos])
        assert set(d) <= set(monos), "polynomial is not homogeneous of the expected degree"
    return sp.Matrix(rows)


def _normalization_factor(l: int, normalization: str):
    """The factor relating a normalisation to ``"integral"`` (see :mod:`minequi.conventions`)."""
    if normalization == "integral":
        return sp.Integer(1)
    if normalization == "component":
        return sp.sqrt(4 * sp.pi)
    if normalization == "norm":
        return sp.sqrt(4 * sp.pi / (2 * l + 1))
    raise ValueError(
        f"normalization must be 'integral', 'component' or 'norm', got {normalization!r}"
    )


def real_spherical_harmonic(l: int, m: int, normalization: str = "integral") -> sp.Expr:
    r"""The real spherical harmonic :math:`Y_{lm}` as a homogeneous harmonic polynomial in x, y, z.

    The returned polynomial is :math:`r^l\, Y_{lm}(\hat x)` (so on the unit
    sphere it *is* the harmonic); it follows :mod:`minequi.conventions`
    exactly: textbook :math:`S_{lm}` from sympy's ``Ynm`` (Condon-Shortley
    phase), then :math:`Y_{lm}(x, y, z) = S_{lm}(z, x, y)`.

    Args:
        l: degree, ``l >= 0``.
        m: order, ``-l <= m <= l``.
        normalization: ``"integral"`` (:math:`\int Y_{lm}^2 d\Omega = 1`),
            ``"component"`` (:math:`\sqrt{4\pi}` times it) or ``"norm"``
            (:math:`\sqrt{4\pi/(2l+1)}` times it).

    >>> real_spherical_harmonic(1, -1), real_spherical_harmonic(1, 1)
    (sqrt(3)*x/(2*sqrt(pi)), sqrt(3)*z/(2*sqrt(pi)))
    >>> real_spherical_harmonic(2, 0, "component")
    sqrt(5)*(-x**2/2 + y**2 - z**2/2)
    """
    _check_l(l)
    if not isinstance(m, int) or not -l <= m <= l:
        raise ValueError(f"m must be an int with -l <= m <= l (l={l}), got {m!r}")
    q, P, *_ = _rational_basis(l)
    k = sp.sqrt(q[m + l]) / sp.sqrt(sp.pi) * _normalization_factor(l, normalization)
    return sp.factor_terms(sp.expand(k * P[m + l]))


def real_spherical_harmonics(l: int, normalization: str = "integral") -> sp.Matrix:
    r"""The column :math:`Y^l = (Y_{l,-l}, \dots, Y_{l,l})` of harmonic polynomials (``(2l+1) x 1``).

    >>> real_spherical_harmonics(1, "component").T
    Matrix([[sqrt(3)*x, sqrt(3)*y, sqrt(3)*z]])
    >>> real_spherical_harmonics(0, "norm")
    Matrix([[1]])
    """
    return sp.Matrix([real_spherical_harmonic(l, m, normalization) for m in range(-l, l + 1)])


def laplacian(f: sp.Expr) -> sp.Expr:
    r"""The Laplacian :math:`\partial_x^2 f + \partial_y^2 f + \partial_z^2 f` (expanded).

    >>> laplacian(real_spherical_harmonic(3, 2))
    0
    """
    return sp.expand(sum(sp.diff(f, v, 2) for v in _XYZ))


# ----------------------------------------------------------------------------
# 4. Generators of the irrep l
# ----------------------------------------------------------------------------
def _express_in_basis(l: int, polys) -> sp.Matrix:
    """The matrix ``T`` with ``polys = T P`` (``P`` the rational basis of degree ``l``)."""
    q, P, M, pivots, A_inv = _rational_basis(l)
    N = _coefficient_matrix(polys, _monomials(l))
    return N[:, list(pivots)] * A_inv


def _rescale(l: int, T: sp.Matrix) -> sp.Matrix:
    r"""Conjugate an operator from the rational basis P to the normalised basis Y: :math:`K T K^{-1}`."""
    q = _rational_basis(l)[0]
    return sp.Matrix(T.rows, T.cols, lambda i, j: sp.radsimp(T[i, j] * sp.sqrt(q[i] / q[j])))


@lru_cache(maxsize=None)
def _rational_generators(l: int):
    """The generators in the rational basis P (rational matrices), checked to be exact."""
    q, P, M, *_ = _rational_basis(l)
    out = []
    for G in lie_algebra_generators():
        Gx = G * sp.Matrix(_XYZ)  # the velocity field x -> G x
        dP = [sp.expand(sum(sp.diff(p, v) * Gx[i] for i, v in enumerate(_XYZ))) for p in P]
        T = _express_in_basis(l, dP)
        assert T * M == _coefficient_matrix(dP, _monomials(l)), "harmonics not closed under so(3)"
        out.append(T)
    return tuple(out)


@lru_cache(maxsize=None)
def so3_generators(l: int) -> tuple[sp.Matrix, sp.Matrix, sp.Matrix]:
    r"""The real antisymmetric generators :math:`(J_x, J_y, J_z)` of the irrep ``l``.

    Defined by differentiating :math:`Y(e^{tG_a} x) = D^l(e^{tG_a}) Y(x)` at
    :math:`t = 0`:

    .. math:: \nabla Y_{lm}(x) \cdot (G_a x) = \sum_{m'} (J_a)_{m m'}\, Y_{lm'}(x),

    found by matching polynomial coefficients.  They satisfy the same algebra as
    the :math:`G_a` (:math:`[J_x, J_y] = J_z` and cyclic), :math:`D^l(e^{\theta G_a}) = e^{\theta J_a}`,
    and for ``l = 1`` they are the :math:`G_a` themselves (:math:`D^1(R) = R`).
    :math:`J_y` (the polar axis) only couples ``m`` with ``-m``: its entry
    :math:`(J_y)_{m,-m}` is :math:`\pm m`.

    >>> Jx, Jy, Jz = so3_generators(1)
    >>> (Jx, Jy, Jz) == lie_algebra_generators()
    True
    >>> Jx, Jy, Jz = so3_generators(2)
    >>> commutator(Jx, Jy) == Jz
    True
    >>> Jy
    Matrix([
    [ 0, 0, 0, 0, 2],
    [ 0, 0, 0, 1, 0],
    [ 0, 0, 0, 0, 0],
    [ 0, -1, 0, 0, 0],
    [-2, 0, 0, 0, 0]])
    """
    _check_l(l)
    return tuple(_rescale(l, T) for T in _rational_generators(l))


def casimir(l: int) -> sp.Matrix:
    r"""The Casimir :math:`J_x^2 + J_y^2 + J_z^2 = -l(l+1)\, I` of irrep ``l``.

    (Real antisymmetric generators are :math:`-i` times the Hermitian angular
    momentum operators, hence the minus sign.)

    >>> casimir(3) == -12 * sp.eye(7)
    True
    """
    Jx, Jy, Jz = so3_generators(l)
    return (Jx * Jx + Jy * Jy + Jz * Jz).applyfunc(sp.radsimp)


# ----------------------------------------------------------------------------
# 5. Wigner D
# ----------------------------------------------------------------------------
def wigner_D(l: int, R: sp.Matrix, simplify: bool = False) -> sp.Matrix:
    r"""The exact real Wigner matrix :math:`D^l(R)`, defined by :math:`Y^l(R x) = D^l(R)\, Y^l(x)`.

    ``R`` is an exact 3x3 sympy rotation matrix: rational (see
    :func:`rotation_from_quaternion`), with square roots, or with a symbolic
    angle.  Each harmonic polynomial is evaluated at :math:`Rx`, expanded, and
    its coefficients are matched against the basis.  For a matrix without free
    symbols the result is checked exactly (the coefficient match must hold on
    *all* monomials, which fails if ``R`` is not orthogonal).  For symbolic
    entries pass ``simplify=True`` to simplify each entry (slow for large ``l``).

    A reflection ``Q`` (``det Q = -1``) is allowed: since
    :math:`Y^l(-x) = (-1)^l Y^l(x)`, :math:`D^l(Q) = (-1)^l D^l(-Q)`.

    >>> wigner_D(1, rotation_from_quaternion(1, 2, 3, 4)) == rotation_from_quaternion(1, 2, 3, 4)
    True
    >>> wigner_D(2, rotation_y(), simplify=True)
    Matrix([
    [ cos(2*theta), 0, 0, 0, sin(2*theta)],
    [ 0, cos(theta), 0, sin(theta), 0],
    [ 0, 0, 1, 0, 0],
    [ 0, -sin(theta), 0, cos(theta), 0],
    [-sin(2*theta), 0, 0, 0, cos(2*theta)]])
    """
    _check_l(l)
    R = sp.Matrix(R)
    if R.shape != (3, 3):
        raise ValueError(f"R must be a 3x3 matrix, got shape {R.shape}")
    q, P, M, *_ = _rational_basis(l)
    Rx = R * sp.Matrix(_XYZ)
    rotated = [sp.expand(p.subs(dict(zip(_XYZ, Rx)), simultaneous=True)) for p in P]
    T = _express_in_basis(l, rotated).applyfunc(sp.expand)
    if not R.free_symbols:
        residual = (T * M - _coefficient_matrix(rotated, _monomials(l))).applyfunc(sp.radsimp)
        if residual != sp.zeros(*residual.shape):
            raise ValueError("R must be orthogonal: Y^l(R x) is not a combination of Y^l(x)")
    D = _rescale(l, T)
    if simplify:
        D = D.applyfunc(lambda e: sp.trigsimp(sp.simplify(e)))
    return D


# ----------------------------------------------------------------------------
# 6. Clebsch-Gordan coefficients
# ----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def clebsch_gordan(l1: int, l2: int, l3: int) -> sp.Array:
    r"""The exact real Clebsch-Gordan tensor ``C[2l1+1, 2l2+1, 2l3+1]``.

    ``C`` (reshaped to a :math:`(2l_1+1)(2l_2+1) \times (2l_3+1)` matrix) spans the
    solutions of the intertwining equations

    .. math:: (J^{l_1}_a \otimes I + I \otimes J^{l_2}_a)\, C = C\, J^{l_3}_a, \qquad a = x, y, z,

    which, by exponentiation, are equivalent to
    :math:`(D^{l_1} \otimes D^{l_2})\, C = C\, D^{l_3}` for all rotations.  By
    Schur's lemma the solution space is one-dimensional when
    :math:`|l_1 - l_2| \le l_3 \le l_1 + l_2` (and zero otherwise, where a zero
    tensor is returned), and any solution has :math:`C^\top C \propto I`.  The
    solution is normalised to :math:`C^\top C = I` and its sign fixed so that the
    first nonzero entry in row-major order is positive (:mod:`minequi.conventions`).

    The equations are solved in the rational basis :math:`P` (all coefficients
    rational, so the null space is exact and fast, via sympy's ``DomainMatrix``
    over QQ) and then rescaled; every entry is :math:`\pm\sqrt{\text{rational}}`.

    >>> C = clebsch_gordan(1, 1, 0)     # the dot product
    >>> [C[i, j, 0] for i in range(3) for j in range(3)]
    [sqrt(3)/3, 0, 0, 0, sqrt(3)/3, 0, 0, 0, sqrt(3)/3]
    >>> C = clebsch_gordan(1, 1, 1)     # the cross product
    >>> C[0, 1, 2], C[1, 0, 2]
    (sqrt(2)/2, -sqrt(2)/2)
    """
    for name, l in (("l1", l1), ("l2", l2), ("l3", l3)):
        if not isinstance(l, int) or isinstance(l, bool) or l < 0:
            raise ValueError(f"{name} must be a non-negative int, got {l!r}")
    d1, d2, d3 = 2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        return sp.Array([0] * (d1 * d2 * d3), (d1, d2, d3))

    def idx(i, j, k):
        return (i * d2 + j) * d3 + k

    def sparse(T):  # nonzero entries of a rational matrix: {row: [(col, value)]}
        return {r: [(c, sp.QQ.convert(T[r, c])) for c in range(T.cols) if T[r, c] != 0]
                for r in range(T.rows)}

    # Rows: one equation per (generator, i, j, k); columns: the unknowns X'[i, j, k].
    #   sum_i' A[i,i'] X'[i',j,k] + sum_j' B[j,j'] X'[i,j',k] - sum_k' X'[i,j,k'] C[k',k] = 0
    rows = {}
    gens = zip(_rational_generators(l1), _rational_generators(l2), _rational_generators(l3))
    for A, B, C3 in gens:
        A, B, C3t = sparse(A), sparse(B), sparse(C3.T)
        for i in range(d1):
            for j in range(d2):
                for k in range(d3):
                    row = {}
                    for i2, v in A[i]:
                        row[idx(i2, j, k)] = row.get(idx(i2, j, k), 0) + v
                    for j2, v in B[j]:
                        row[idx(i, j2, k)] = row.get(idx(i, j2, k), 0) + v
                    for k2, v in C3t[k]:
                        row[idx(i, j, k2)] = row.get(idx(i, j, k2), 0) - v
                    row = {c: v for c, v in row.items() if v != 0}
                    if row:
                        rows[len(rows)] = row
    system = DomainMatrix(rows, (len(rows), d1 * d2 * d3), sp.QQ)
    null = system.to_sparse().nullspace().to_Matrix()
    assert null.rows == 1, f"expected a one-dimensional solution space, got {null.rows}"
    Xp = null.row(0)

    # Back to the normalised basis: X[i,j,k] = sqrt(q1_i q2_j / q3_k) X'[i,j,k] (up to a constant),
    # then C^T C = lam I.  Work with squares, which are rational.
    q1, q2, q3 = (_rational_basis(l)[0] for l in (l1, l2, l3))
    sq = [q1[i] * q2[j] / q3[k] * Xp[idx(i, j, k)] ** 2
          for i in range(d1) for j in range(d2) for k in range(d3)]
    lam = sum(sq[idx(i, j, 0)] for i in range(d1) for j in range(d2))
    first = next(n for n in range(len(sq)) if Xp[n] != 0)
    sign = 1 if Xp[first] > 0 else -1
    entries = [sign * sp.sign(Xp[n]) * sp.sqrt(sq[n] / lam) for n in range(len(sq))]
    return sp.Array(entries, (d1, d2, d3))


# ----------------------------------------------------------------------------
# Numeric evaluation
# ----------------------------------------------------------------------------
def to_numpy(a):
    """A sympy matrix or array without free symbols as a float64 numpy array.

    >>> to_numpy(clebsch_gordan(0, 0, 0))
    array([[[1.]]])
    """
    import numpy as np

    arr = sp.Array(a)
    flat = list(sp.flatten(arr.tolist())) if arr.rank() else [arr[()]]
    return np.array([float(sp.N(v, 30)) for v in flat], dtype=np.float64).reshape(arr.shape)
