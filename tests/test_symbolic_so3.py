"""Symbolic equals numeric: the exact sympy derivations of minequi.symbolic.so3 against the library.

Each numeric object of SO(3) representation theory (real spherical harmonics in
three normalisations, generators, Wigner D, Clebsch-Gordan) is compared with its
exact derivation; the exact objects are also checked against their defining
properties exactly (commutators, Casimir, harmonicity, D^1 = R, homomorphism,
orthonormality of CG).  Negative controls show that the comparisons can fail.
"""
import itertools

import numpy as np
import pytest
import sympy as sp
import torch

from minequi.clebsch_gordan import clebsch_gordan
from minequi.irreps import Irreps
from minequi.so3 import so3_generators, wigner_D
from minequi.spherical_harmonics import spherical_harmonics
from minequi.symbolic import so3 as S

x, y, z, theta = S.x, S.y, S.z, S.theta
RNG = np.random.default_rng(0)

# Exact rotations: rational ones from integer quaternions, one with square roots, one reflection.
EXACT_ROTATIONS = [
    S.rotation_from_quaternion(1, 2, 3, 4),
    S.rotation_from_quaternion(3, -1, 2, 5),
    S.rotation_from_quaternion(0, 1, -2, 2),  # a half turn
    S.rotation_x(sp.pi / 4) * S.rotation_z(sp.pi / 3),
]


def _np(M):
    return S.to_numpy(M)


def _unit_points(n):
    v = RNG.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---------------------------------------------------------------------------
# exact properties of the symbolic objects
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("l", range(5))
def test_harmonic_polynomials_are_harmonic_and_homogeneous(l):
    for Y in S.real_spherical_harmonics(l):
        assert S.laplacian(Y) == 0
        assert sp.Poly(Y, x, y, z).is_homogeneous and sp.Poly(Y, x, y, z).total_degree() == l


def test_l1_is_the_position_vector():
    Y1 = S.real_spherical_harmonics(1, "component")
    assert Y1 == sp.sqrt(3) * sp.Matrix([x, y, z])


@pytest.mark.parametrize("l", range(5))
def test_harmonics_match_sympy_Ynm_by_the_convention_rule(l):
    """Y_lm(x,y,z) = S_lm(z,x,y), S from sympy's complex Ynm: checked at random angles, independently
    of the construction (evaluating Ynm numerically rather than via the polynomial substitution)."""
    th, ph = sp.symbols("th ph", real=True)
    for t, p in RNG.uniform([0.1, 0.0], [3.0, 6.2], size=(3, 2)):
        # the point whose textbook spherical angles are (t, p): (X, Y, Z) = (sin t cos p, sin t sin p, cos t)
        X, Yv, Z = np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)
        for m in range(-l, l + 1):
            c = complex(sp.Ynm(l, abs(m), th, ph).subs({th: t, ph: p}).evalf(30))
            if m < 0:
                expected = np.sqrt(2) * (-1) ** m * c.imag
            elif m == 0:
                expected = c.real
            else:
                expected = np.sqrt(2) * (-1) ** m * c.real
            # Y_lm(x, y, z) = S_lm(z, x, y), so S_lm(X, Y, Z) = Y_lm(Y, Z, X)
            got = float(S.real_spherical_harmonic(l, m).subs({x: Yv, y: Z, z: X}))
            assert abs(got - expected) < 1e-12, (l, m, got, expected)


@pytest.mark.parametrize("l", range(5))
def test_integral_normalisation_by_exact_quadrature(l):
    """Gauss-Legendre in cos(theta) x uniform phi integrates polynomials of degree <= 2l exactly."""
    n = l + 2
    u, w = np.polynomial.legendre.leggauss(n)
    phi = 2 * np.pi * np.arange(2 * n + 1) / (2 * n + 1)
    U, PHI = np.meshgrid(u, phi, indexing="ij")
    s = np.sqrt(1 - U**2)
    pts = np.stack([s * np.cos(PHI), s * np.sin(PHI), U], -1).reshape(-1, 3)
    wts = (w[:, None] * np.full_like(PHI, 2 * np.pi / (2 * n + 1))).reshape(-1)
    f = sp.lambdify((x, y, z), list(S.real_spherical_harmonics(l, "integral")), "numpy")
    Y = np.stack([np.broadcast_to(v, (len(pts),)) for v in f(*pts.T)])  # [2l+1, P]
    gram = (Y * wts) @ Y.T
    assert np.abs(gram - np.eye(2 * l + 1)).max() < 1e-12


@pytest.mark.parametrize("l", range(5))
def test_generators_exact_algebra(l):
    Jx, Jy, Jz = S.so3_generators(l)
    assert S.commutator(Jx, Jy) == Jz and S.commutator(Jy, Jz) == Jx and S.commutator(Jz, Jx) == Jy
    assert S.casimir(l) == -l * (l + 1) * sp.eye(2 * l + 1)
    for J in (Jx, Jy, Jz):
        assert J.T == -J


def test_l1_generators_and_D1_are_the_3x3_ones():
    assert S.so3_generators(1) == S.lie_algebra_generators()
    for R in EXACT_ROTATIONS:
        assert (S.wigner_D(1, R) - R).applyfunc(sp.radsimp) == sp.zeros(3, 3)


def test_matrix_exponential_of_generators():
    for G, Rot in zip(S.lie_algebra_generators(), (S.rotation_x, S.rotation_y, S.rotation_z)):
        E = (theta * G).exp().applyfunc(lambda e: sp.simplify(e.rewrite(sp.cos)))
        assert E == Rot(theta)
    J = S.so2_generator()
    assert S.so2_rotation() == sp.Matrix([[sp.cos(theta), -sp.sin(theta)], [sp.sin(theta), sp.cos(theta)]])
    U = S.so2_diagonalizer()
    assert sp.simplify(U.H * U) == sp.eye(2)
    assert sp.simplify(U.H * J * U) == sp.diag(sp.I, -sp.I)


@pytest.mark.parametrize("l", [2, 3])
def test_wigner_D_exact_homomorphism_and_orthogonality(l):
    R1, R2 = EXACT_ROTATIONS[0], EXACT_ROTATIONS[1]
    D1, D2, D12 = S.wigner_D(l, R1), S.wigner_D(l, R2), S.wigner_D(l, R1 * R2)
    assert (D1 * D2 - D12).applyfunc(sp.radsimp) == sp.zeros(2 * l + 1)
    assert (D1 * D1.T).applyfunc(sp.radsimp) == sp.eye(2 * l + 1)


def test_wigner_D_of_reflection_is_parity_times_rotation():
    R = EXACT_ROTATIONS[0]
    for l in range(4):
        assert S.wigner_D(l, -R) == (-1) ** l * S.wigner_D(l, R)


def test_wigner_D_rejects_non_orthogonal_matrix():
    with pytest.raises(ValueError, match="orthogonal"):
        S.wigner_D(2, sp.Matrix([[1, 1, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="3x3"):
        S.wigner_D(2, sp.eye(2))


def test_wigner_D_exponential_of_generator_symbolic_angle():
    """D^2(exp(theta G_y)) = exp(theta J_y), exactly, for a symbolic angle."""
    Jy = S.so3_generators(2)[1]
    lhs = S.wigner_D(2, S.rotation_y(theta), simplify=True)
    rhs = (theta * Jy).exp().applyfunc(lambda e: sp.simplify(e.rewrite(sp.cos)))
    assert (lhs - rhs).applyfunc(sp.simplify) == sp.zeros(5)


@pytest.mark.parametrize("l1,l2", [(1, 1), (1, 2), (2, 2)])
def test_clebsch_gordan_exact_properties(l1, l2):
    R = EXACT_ROTATIONS[0]
    for l3 in range(abs(l1 - l2), l1 + l2 + 1):
        C = S.clebsch_gordan(l1, l2, l3)
        d1, d2, d3 = C.shape
        M = sp.Matrix(d1 * d2, d3, list(sp.flatten(C.tolist())))
        assert (M.T * M).applyfunc(sp.radsimp) == sp.eye(d3)
        lhs = sp.kronecker_product(S.wigner_D(l1, R), S.wigner_D(l2, R)) * M
        assert (lhs - M * S.wigner_D(l3, R)).applyfunc(sp.radsimp) == sp.zeros(d1 * d2, d3)
    assert S.clebsch_gordan(1, 1, 3) == sp.Array([0] * 63, (3, 3, 7))


# ---------------------------------------------------------------------------
# symbolic == numeric
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("normalization", ["integral", "component", "norm"])
@pytest.mark.parametrize("l", range(5))
def test_spherical_harmonics_symbolic_equals_numeric(l, normalization):
    f = sp.lambdify((x, y, z), list(S.real_spherical_harmonics(l, normalization)), "numpy")
    pts = RNG.standard_normal((20, 3)) * 1.7
    unit = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    expected = np.stack([np.broadcast_to(v, (20,)) for v in f(*unit.T)], -1)  # [20, 2l+1]
    got = spherical_harmonics(l, torch.tensor(pts), normalize=True, normalization=normalization)
    assert np.abs(got.numpy() - expected).max() < 1e-12
    # normalize=False: the homogeneous polynomial itself
    expected = np.stack([np.broadcast_to(v, (20,)) for v in f(*pts.T)], -1)
    got = spherical_harmonics(l, torch.tensor(pts), normalize=False, normalization=normalization)
    assert np.abs(got.numpy() - expected).max() < 1e-11 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("l", range(5))
def test_generators_symbolic_equals_numeric(l):
    num = so3_generators(l).numpy()
    for a, J in enumerate(S.so3_generators(l)):
        assert np.abs(num[a] - _np(J)).max() < 1e-12


@pytest.mark.parametrize("l", range(5))
def test_wigner_D_symbolic_equals_numeric_exact_rotations(l):
    for R in EXACT_ROTATIONS + [-EXACT_ROTATIONS[0]]:
        D = _np(S.wigner_D(l, R))
        if R.det() == 1:
            got = wigner_D(l, torch.tensor(_np(R)))
        else:  # O(3): the irrep "l" with parity (-1)^l is the one the harmonics carry
            got = Irreps(f"{l}{'e' if l % 2 == 0 else 'o'}").D_from_matrix(torch.tensor(_np(R)))
        assert np.abs(got.numpy() - D).max() < 1e-12


@pytest.mark.parametrize("l", range(5))
def test_wigner_D_symbolic_angle_equals_numeric(l):
    """D^l(R_y(t)) derived with a symbolic angle, then evaluated, against the library, several t."""
    for Rot in (S.rotation_x, S.rotation_y):
        f = sp.lambdify(theta, S.wigner_D(l, Rot(theta)), "numpy")
        for t in RNG.uniform(-np.pi, np.pi, 4):
            R = torch.tensor(_np(Rot(theta).subs(theta, t)))
            assert np.abs(wigner_D(l, R).numpy() - np.asarray(f(t), dtype=float)).max() < 1e-12


def test_wigner_D_euler_angles_symbolic_equals_numeric():
    a, b, c = sp.symbols("a b c", real=True)
    R = S.rotation_z(a) * S.rotation_y(b) * S.rotation_z(c)
    for l in (1, 2):
        f = sp.lambdify((a, b, c), S.wigner_D(l, R), "numpy")
        for angles in RNG.uniform(-np.pi, np.pi, (3, 3)):
            Rn = torch.tensor(_np(R.subs(dict(zip((a, b, c), angles)))))
            assert np.abs(wigner_D(l, Rn).numpy() - np.asarray(f(*angles), dtype=float)).max() < 1e-12


@pytest.mark.parametrize("l1,l2", list(itertools.product(range(4), repeat=2)))
def test_clebsch_gordan_symbolic_equals_numeric(l1, l2):
    for l3 in range(abs(l1 - l2), l1 + l2 + 1):
        exact = _np(S.clebsch_gordan(l1, l2, l3))
        got = clebsch_gordan(l1, l2, l3).numpy()
        assert got.shape == exact.shape
        assert np.abs(got - exact).max() < 1e-12, (l1, l2, l3)


# ---------------------------------------------------------------------------
# negative controls: the comparisons above can fail
# ---------------------------------------------------------------------------
def test_negative_control_one_sign_flip_in_D_is_caught():
    R = EXACT_ROTATIONS[0]
    D = S.wigner_D(2, R).as_mutable()
    D[1, 3] = -D[1, 3]
    got = wigner_D(2, torch.tensor(_np(R))).numpy()
    assert np.abs(got - _np(D)).max() > 1e-2


def test_negative_control_wrong_normalisation_and_wrong_axis_are_caught():
    pts = _unit_points(10)
    num = spherical_harmonics(2, torch.tensor(pts), normalize=True, normalization="component").numpy()
    for Y in (S.real_spherical_harmonics(2, "norm"),  # wrong normalisation
              S.real_spherical_harmonics(2, "component").subs({x: z, y: x, z: y}, simultaneous=True)):  # polar z
        f = sp.lambdify((x, y, z), list(Y), "numpy")
        wrong = np.stack([np.broadcast_to(v, (10,)) for v in f(*pts.T)], -1)
        assert np.abs(num - wrong).max() > 1e-2


def test_negative_control_cg_sign_flip_is_caught():
    exact = _np(S.clebsch_gordan(1, 2, 2))
    got = clebsch_gordan(1, 2, 2).numpy()
    assert np.abs(got - (-exact)).max() > 1e-2
