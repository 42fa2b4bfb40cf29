r"""The rotation group SO(3): Lie-algebra generators and Wigner D matrices.

Everything here is in the real basis of :mod:`minequi.conventions`: components
are ordered ``m = -l..l``, the polar axis of the harmonics is *y*, and the
``l = 1`` representation is the rotation matrix itself, :math:`D^1(R) = R`.

Generators
----------
Write :math:`L_a` (``a = x, y, z``) for the 3x3 generators of rotations,
:math:`(L_a)_{bc} = -\varepsilon_{abc}`, so that :math:`L_a v = e_a \times v`
and every rotation is :math:`R = \exp(\sum_a \omega_a L_a)` with
:math:`\omega = \theta\, n` (axis ``n``, angle ``theta``).  The generator
:math:`J^l_a` of the spin-``l`` representation is defined by differentiating the
defining relation :math:`Y^l(R x) = D^l(R)\, Y^l(x)` at the identity:

.. math:: J^l_a\, Y^l(x) = \frac{d}{dt} Y^l\big(e^{t L_a} x\big)\Big|_{t=0}
          = \big((e_a \times x) \cdot \nabla\big)\, Y^l(x).

The differential operator :math:`(e_a \times x)\cdot\nabla = (x \times \nabla)_a`
is :math:`i` times the quantum-mechanical angular momentum :math:`\hat L_a`,
whose matrices in the complex basis :math:`Y_l^m` (Condon-Shortley phase,
polar axis *z*) are the textbook ladder formulas

.. math:: \hat L_z |m\rangle = m |m\rangle, \qquad
          \hat L_\pm |m\rangle = \sqrt{l(l+1) - m(m \pm 1)}\; |m \pm 1\rangle.

:func:`so3_generators` builds them, changes to the textbook real basis
:math:`S_{lm}` (a unitary ``U``), and relabels the axes,
:math:`Y_{lm}(x, y, z) = S_{lm}(z, x, y)`, which permutes the generators
cyclically.  The result is real, exactly antisymmetric, satisfies
:math:`[J_x, J_y] = J_z` (and cyclic), and :math:`J^1_a = L_a`.

Wigner D
--------
:func:`wigner_D` maps a rotation to its rotation vector :math:`\omega` through a
numerically stable quaternion (Shepperd's method, so 180-degree rotations are
fine) and returns :math:`D^l(R) = \exp(\sum_a \omega_a J^l_a)`.
"""
from __future__ import annotations

import math
import operator

import torch

__all__ = ["so3_generators", "wigner_D", "matrix_to_quaternion", "check_orthogonal", "GENERATORS_LMAX"]


_GENERATORS = {}  # l -> [3, 2l+1, 2l+1] float64, built once


def _generators_float64(l: int) -> torch.Tensor:
    if l not in _GENERATORS:
        _GENERATORS[l] = _build_generators(l)
    return _GENERATORS[l]


# Under torch.compile the generators are a constant of the graph: Dynamo calls this function
# instead of tracing it (the build has data-dependent checks).  This is what the decorator
# torch.compiler.assume_constant_result does; set directly, because that decorator imports
# torch._dynamo (and sympy) when minequi is imported.
_generators_float64._dynamo_marked_constant = True


def _build_generators(l: int) -> torch.Tensor:
    n = 2 * l + 1
    m = torch.arange(-l, l + 1, dtype=torch.float64)  # [n]
    # Complex (Condon-Shortley) basis, kets ordered m = -l..l: (Lp)_{m+1, m}.
    lp = torch.zeros(n, n, dtype=torch.complex128)
    ladder = torch.sqrt(l * (l + 1) - m[:-1] * (m[:-1] + 1))  # [n-1], for m = -l..l-1
    lp[torch.arange(1, n), torch.arange(0, n - 1)] = ladder.to(torch.complex128)
    lm = lp.T.clone()
    Lx = (lp + lm) / 2
    Ly = (lp - lm) / 2j
    Lz = torch.diag(m).to(torch.complex128)
    # Matrix of the operator (x cross grad)_a = i L_a on the *functions* Y^m:
    # O Y^m = sum_m' i (L_a)_{m'm} Y^m'  ->  coefficient matrix i L_a^T.
    Jc = [1j * L.T for L in (Lx, Ly, Lz)]
    # Textbook real basis S = U Y (rows: S_m as combinations of the Y^m').
    U = torch.zeros(n, n, dtype=torch.complex128)
    s = 1 / math.sqrt(2)
    for mm in range(-l, l + 1):
        i = mm + l
        if mm > 0:  # S_m = ((-1)^m Y^m + Y^-m) / sqrt2
            U[i, mm + l] = (-1) ** mm * s
            U[i, -mm + l] = s
        elif mm < 0:  # S_m = i (Y^-|m| - (-1)^|m| Y^|m|) / sqrt2
            a = -mm
            U[i, -a + l] = 1j * s
            U[i, a + l] = -1j * (-1) ** a * s
        else:
            U[i, l] = 1.0
    JS = [U @ J @ U.conj().T for J in Jc]  # generators in the S basis (polar axis z)
    for J in JS:  # they must be real: a bug in U would show here
        assert J.imag.abs().max() < 1e-12
    JS = [J.real for J in JS]
    # Y(x) = S(P x) with P x = (z, x, y); P e_x = e_y, P e_y = e_z, P e_z = e_x.
    J = torch.stack([JS[1], JS[2], JS[0]])  # [3, n, n]
    # Every entry is +-sqrt(k)/2 for an integer k (ladder coefficients times 1, 1/sqrt2 or 1/2);
    # snap to that value, which removes the rounding of the complex products above.
    snapped = torch.sign(J) * torch.sqrt(torch.round(4 * J * J)) / 2
    assert (snapped - J).abs().max() < 1e-12
    J = snapped
    assert (J + J.transpose(-1, -2)).abs().max() == 0
    return J


def so3_generators(l: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    r"""The real generators :math:`J^l_x, J^l_y, J^l_z` of the spin-``l`` representation.

    Contract: ``J = so3_generators(l)`` has shape ``[3, 2l+1, 2l+1]``, each
    ``J[a]`` is real antisymmetric, :math:`[J_x, J_y] = J_z` (cyclically), and
    :math:`D^l(\exp(\sum_a \omega_a L_a)) = \exp(\sum_a \omega_a J^l_a)`, i.e.
    :math:`J^l_a Y^l(x) = ((e_a \times x)\cdot\nabla) Y^l(x)`.  For ``l = 1``
    they are the 3x3 rotation generators :math:`(L_a)_{bc} = -\varepsilon_{abc}`.

    >>> J = so3_generators(1)
    >>> J[2]                                  # rotation about z: (x, y, z) -> (-y, x, 0)
    tensor([[ 0., -1.,  0.],
            [ 1.,  0.,  0.],
            [ 0.,  0.,  0.]], dtype=torch.float64)
    >>> J = so3_generators(3)
    >>> bool(torch.allclose(J[0] @ J[1] - J[1] @ J[0], J[2], atol=1e-12))
    True
    """
    l = _check_l(l, "l", lmax=GENERATORS_LMAX)
    return _generators_float64(l).to(dtype=dtype, device=device)


#: Largest ``l`` of :func:`so3_generators` and :func:`wigner_D`.  Building the generators takes
#: about a dozen dense complex ``(2l+1) x (2l+1)`` matrices (about 0.8 GB and a minute on two
#: cores at l = 1000, growing as l^2 in memory and l^3 in time), and every ``D^l`` is dense.  No
#: model needs l in the hundreds; a larger l is refused *before* anything is allocated.
GENERATORS_LMAX = 1000


def _check_l(l, name, lmax=None):
    """``l`` as a Python int; ``TypeError`` unless an integer, ``ValueError`` if negative (or above ``lmax``)."""
    if isinstance(l, bool):
        raise TypeError(f"{name} must be a non-negative int, got {l!r}")
    try:
        l = operator.index(l)
    except TypeError:
        raise TypeError(f"{name} must be a non-negative int, got {l!r}") from None
    if l < 0:
        raise ValueError(f"{name} must be a non-negative int, got {l}")
    if lmax is not None and l > lmax:
        n = 2 * l + 1
        raise ValueError(
            f"{name} = {l} is above the supported maximum {lmax}: the dense {n} x {n} generator and "
            f"Wigner matrices would need about {12 * 16 * n * n / 2**30:.3g} GiB to build "
            f"(see minequi.so3.GENERATORS_LMAX)")
    return l


def _tolerance(dtype) -> float:
    """Orthogonality tolerance on ``|Q Q^T - I|`` for a matrix stored in ``dtype``.

    float32/float64: ``max(1e-6, 1000 eps)``, room for accumulated round-off.  float16 and
    bfloat16: ``4 eps`` (a rotation rounded to them is within about 1 eps; 1000 eps would be about
    1 in float16 and accept ``1.3 * I``).
    """
    eps = torch.finfo(dtype).eps
    return max(1e-6, 1e3 * eps) if eps < 1e-4 else 4 * eps


def _compute_dtype(dtype):
    """float16/bfloat16 are computed in float32 (no 16-bit ``det``/``matrix_exp``; too coarse anyway)."""
    return torch.float32 if torch.finfo(dtype).eps > 1e-4 else dtype


def check_orthogonal(Q: torch.Tensor, name: str = "Q", *, rotation: bool = False) -> torch.Tensor:
    """Validate that ``Q`` is a floating tensor ``[..., 3, 3]`` of orthogonal matrices.

    Raises ``TypeError`` (not a floating tensor) or ``ValueError`` (wrong shape,
    ``|Q Q^T - I|`` above the tolerance of ``Q``'s dtype, or, with ``rotation=True``, a negative
    determinant).  The tolerance is ``max(1e-6, 1000 eps)`` in float32/float64 and ``4 eps`` in
    float16/bfloat16, whose matrices are checked in float32.  Returns ``Q`` unchanged.

    Checking the *values* needs them on the host: one synchronisation on a GPU.  Under
    ``torch.compile`` the value check is an in-graph ``torch._assert_async`` instead (no graph
    break, no synchronisation; it raises ``RuntimeError`` with the same message, on a GPU as a
    device-side assertion).

    >>> check_orthogonal(torch.eye(3)).shape
    torch.Size([3, 3])
    >>> check_orthogonal(2 * torch.eye(3))
    Traceback (most recent call last):
    ...
    ValueError: Q must be orthogonal (Q @ Q.T = I), but max |Q Q^T - I| = 3.0e+00 ...
    >>> check_orthogonal(1.3 * torch.eye(3, dtype=torch.float16))
    Traceback (most recent call last):
    ...
    ValueError: Q must be orthogonal (Q @ Q.T = I), but max |Q Q^T - I| = 6.9e-01 > 4e-03 ...
    """
    if not torch.is_tensor(Q):
        raise TypeError(f"{name} must be a torch.Tensor of shape [..., 3, 3], got {type(Q).__name__}")
    if not Q.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {Q.dtype}")
    if Q.dim() < 2 or Q.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape [..., 3, 3], got {tuple(Q.shape)}")
    if Q.numel() == 0:
        return Q
    tol = _tolerance(Q.dtype)
    Qc = Q.to(_compute_dtype(Q.dtype))  # [..., 3, 3]
    eye = torch.eye(3, dtype=Qc.dtype, device=Qc.device)  # [3, 3]
    err = (Qc @ Qc.transpose(-1, -2) - eye).abs().amax()  # [] (NaN if Q has a NaN)
    if torch.compiler.is_compiling():  # no host synchronisation inside a compiled graph
        torch._assert_async(err <= tol, f"{name} must be orthogonal ({name} @ {name}.T = I) up to {tol:.0e}")
        if rotation:
            torch._assert_async((torch.linalg.det(Qc) > 0).all(), f"{name} must be a rotation (det = +1)")
        return Q
    err = float(err.detach())  # the host synchronisation
    if not err <= tol:  # also catches NaN
        raise ValueError(
            f"{name} must be orthogonal ({name} @ {name}.T = I), but max |{name} {name}^T - I| = {err:.1e} > {tol:.0e} "
            f"(the tolerance for {Q.dtype})"
        )
    if rotation and bool((torch.linalg.det(Qc) < 0).any()):
        raise ValueError(
            f"{name} must be a rotation (det = +1) but has det = -1; for reflections "
            f"use Irrep.D_from_matrix / Irreps.D_from_matrix, which handle parity"
        )
    return Q


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    r"""Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of rotation matrices ``R`` ``[..., 3, 3]``.

    Shepperd's method: of the four candidates :math:`4w^2 = 1 + \mathrm{tr} R`,
    :math:`4x^2 = 1 + R_{xx} - R_{yy} - R_{zz}`, ... the largest is used to divide,
    so the result is accurate for every rotation, including 180 degrees.
    No validation (see :func:`wigner_D`).

    >>> matrix_to_quaternion(torch.eye(3, dtype=torch.float64))
    tensor([1., 0., 0., 0.], dtype=torch.float64)
    """
    R00, R01, R02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    R10, R11, R12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    R20, R21, R22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # Four candidates, each 4 * q_i * q (one row per choice of the pivot i)
    cand = torch.stack(
        [
            torch.stack([1 + R00 + R11 + R22, R21 - R12, R02 - R20, R10 - R01], -1),
            torch.stack([R21 - R12, 1 + R00 - R11 - R22, R01 + R10, R02 + R20], -1),
            torch.stack([R02 - R20, R01 + R10, 1 - R00 + R11 - R22, R12 + R21], -1),
            torch.stack([R10 - R01, R02 + R20, R12 + R21, 1 - R00 - R11 + R22], -1),
        ],
        -2,
    )  # [..., 4, 4]; row i = 4 q_i (w, x, y, z)
    diag = torch.diagonal(cand, dim1=-2, dim2=-1)  # [..., 4] = 4 q_i^2
    best = diag.argmax(-1, keepdim=True)  # [..., 1]
    row = torch.gather(cand, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)  # [..., 4]
    q = row / row.norm(dim=-1, keepdim=True)  # [..., 4]
    return torch.where(q[..., :1] < 0, -q, q)


def _rotation_vector(R: torch.Tensor) -> torch.Tensor:
    """``omega = theta * n`` with ``R = exp(sum_a omega_a L_a)``, ``0 <= theta <= pi``. ``[..., 3]``."""
    q = matrix_to_quaternion(R)  # [..., 4], w >= 0
    w, v = q[..., 0], q[..., 1:]
    s = v.norm(dim=-1)  # sin(theta / 2)
    theta = 2 * torch.atan2(s, w)  # [...]
    # theta / sin(theta/2) -> 2 / w as s -> 0; avoid 0/0 at the identity
    factor = torch.where(s > 0, theta / torch.where(s > 0, s, torch.ones_like(s)), 2 / w)
    return v * factor[..., None]  # [..., 3]


def wigner_D(l: int, R: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    r"""Real Wigner D matrix :math:`D^l(R)` of rotations ``R`` ``[..., 3, 3]`` -> ``[..., 2l+1, 2l+1]``.

    Contract (:mod:`minequi.conventions`): :math:`Y^l(R x) = D^l(R)\, Y^l(x)`
    for the harmonics of :func:`minequi.spherical_harmonics`,
    :math:`D^l(R_1 R_2) = D^l(R_1) D^l(R_2)`, :math:`D^l` is orthogonal and
    :math:`D^1(R) = R`.  Computed as :math:`\exp(\sum_a \omega_a J^l_a)` with the
    rotation vector :math:`\omega` from a stable quaternion; ``0 <= l <= 1000``
    (:data:`GENERATORS_LMAX`, checked before anything is allocated).

    ``R`` must be orthogonal with determinant +1 (``ValueError`` otherwise, see
    :func:`check_orthogonal`; for reflections use :meth:`minequi.Irrep.D_from_matrix`).
    That check reads the values on the host (one synchronisation on a GPU); under
    ``torch.compile`` it is an in-graph assertion instead, and ``validate=False`` skips it.
    The output has ``R``'s dtype and device; float16/bfloat16 rotations are checked and
    computed in float32 and the result is rounded back.

    >>> from minequi.testing import rand_rotation
    >>> R = rand_rotation(4, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(wigner_D(1, R), R, atol=1e-14))
    True
    >>> D = wigner_D(2, R)
    >>> D.shape
    torch.Size([4, 5, 5])
    >>> bool(torch.allclose(wigner_D(2, R[0] @ R[1]), D[0] @ D[1], atol=1e-13))
    True
    """
    l = _check_l(l, "l", lmax=GENERATORS_LMAX)
    if validate:
        check_orthogonal(R, "R", rotation=True)
    elif not (torch.is_tensor(R) and R.is_floating_point() and R.dim() >= 2 and R.shape[-2:] == (3, 3)):
        check_orthogonal(R, "R")  # raises the shape / dtype error (only the values are not checked)
    Rc = R.to(_compute_dtype(R.dtype))  # [..., 3, 3]
    omega = _rotation_vector(Rc)  # [..., 3]
    J = so3_generators(l, dtype=Rc.dtype, device=Rc.device)  # [3, n, n]
    A = torch.einsum("...a,aij->...ij", omega, J)  # [..., n, n]
    return torch.linalg.matrix_exp(A).to(R.dtype)  # [..., n, n]
