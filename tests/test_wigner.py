"""Tests of minequi.so3: the real so(3) generators and the Wigner D matrices."""
import math

import pytest
import torch

from minequi.so3 import check_orthogonal, matrix_to_quaternion, so3_generators, wigner_D
from minequi.spherical_harmonics import spherical_harmonics
from minequi.testing import equivariance_error, haar_so3, rand_orthogonal, rand_rotation

LS = list(range(9))
EPS3 = torch.zeros(3, 3, 3, dtype=torch.float64)
for (a, b, c), s in {(0, 1, 2): 1, (1, 2, 0): 1, (2, 0, 1): 1, (0, 2, 1): -1, (2, 1, 0): -1, (1, 0, 2): -1}.items():
    EPS3[a, b, c] = s
L3 = -EPS3  # (L_a)_{bc} = -eps_{abc}: L_a v = e_a x v


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def expm_rotation(omega):
    """exp(sum_a omega_a L_a) as a 3x3 matrix (reference, via matrix_exp)."""
    return torch.linalg.matrix_exp(torch.einsum("a,abc->bc", omega, L3))


def rotation_180(n):
    n = n / n.norm()
    return 2 * torch.outer(n, n) - torch.eye(3, dtype=n.dtype)


# ----------------------------------------------------------------------------- generators
def test_generators_l1_are_the_rotation_generators():
    assert torch.equal(so3_generators(1), L3)


@pytest.mark.parametrize("l", list(range(13)))
def test_generators_commutation_and_antisymmetry(l):
    J = so3_generators(l)
    assert J.shape == (3, 2 * l + 1, 2 * l + 1) and J.dtype == torch.float64
    assert torch.equal(J, -J.transpose(-1, -2))
    for a, b, c in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        assert (J[a] @ J[b] - J[b] @ J[a] - J[c]).abs().max() < 1e-12
    # Casimir: sum_a J_a^2 = -l(l+1) I
    cas = sum(J[a] @ J[a] for a in range(3))
    assert (cas + l * (l + 1) * torch.eye(2 * l + 1, dtype=torch.float64)).abs().max() < 1e-11


def test_generators_are_derivative_of_spherical_harmonics():
    # J_a Y(x) = d/dt Y(exp(t L_a) x) at t = 0, checked by autograd on a random point
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen(1))
    for l in [2, 5]:
        J = so3_generators(l)
        for a in range(3):
            t = torch.zeros((), dtype=torch.float64, requires_grad=True)
            R = torch.linalg.matrix_exp(t * L3[a])
            y = spherical_harmonics(l, x @ R.T)  # [5, 2l+1]
            dy = torch.stack([torch.autograd.grad(y[:, i].sum(), t, retain_graph=True)[0] for i in range(2 * l + 1)])
            # y[:, i] summed over points: d/dt sum_n Y_i(x_n) = sum_n (J Y(x_n))_i
            expected = (spherical_harmonics(l, x) @ J[a].T).sum(0)
            assert (dy - expected).abs().max() < 1e-12


# ----------------------------------------------------------------------------- Wigner D
def test_D1_is_R():
    R = rand_rotation(200, generator=gen())
    assert (wigner_D(1, R) - R).abs().max() < 1e-14


def test_D0_is_one():
    R = rand_rotation(10, generator=gen())
    assert torch.equal(wigner_D(0, R), torch.ones(10, 1, 1, dtype=torch.float64))


@pytest.mark.parametrize("l", LS)
def test_homomorphism_orthogonality_det(l):
    R1 = rand_rotation(50, generator=gen(l))
    R2 = rand_rotation(50, generator=gen(100 + l))
    D1, D2 = wigner_D(l, R1), wigner_D(l, R2)
    assert (wigner_D(l, R1 @ R2) - D1 @ D2).abs().max() < 1e-13
    eye = torch.eye(2 * l + 1, dtype=torch.float64)
    assert (D1 @ D1.transpose(-1, -2) - eye).abs().max() < 1e-13
    assert (torch.linalg.det(D1) - 1).abs().max() < 1e-12
    # inverse = transpose
    assert (wigner_D(l, R1.transpose(-1, -2)) - D1.transpose(-1, -2)).abs().max() < 1e-13


@pytest.mark.parametrize("l", LS)
def test_defining_relation_with_spherical_harmonics(l):
    """Y(R x) = D(R) Y(x): the convention that *defines* D (conventions.py)."""
    x = torch.randn(64, 3, dtype=torch.float64, generator=gen(l))
    err = equivariance_error(
        lambda x: spherical_harmonics(l, x), x, haar_so3,
        act_in=lambda R, x: x @ R.T, act_out=lambda R, y: y @ wigner_D(l, R).T, n_samples=16,
    )
    assert err < 1e-13 * (2 * l + 1)


def test_identity_and_near_identity():
    I = torch.eye(3, dtype=torch.float64)
    for l in LS:
        assert (wigner_D(l, I) - torch.eye(2 * l + 1, dtype=torch.float64)).abs().max() < 1e-15
    omega = torch.randn(3, dtype=torch.float64, generator=gen(3))
    omega = omega / omega.norm()
    for eps in [1e-6, 1e-9, 1e-12, 1e-15]:
        R = expm_rotation(eps * omega)
        for l in [1, 4, 8]:
            J = torch.einsum("a,aij->ij", omega, so3_generators(l))
            first_order = torch.eye(2 * l + 1, dtype=torch.float64) + eps * J
            assert (wigner_D(l, R) - first_order).abs().max() < 1e-14 + 10 * eps**2 * l * l


def test_180_degree_rotations():
    axes = [torch.tensor(v, dtype=torch.float64) for v in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3])]
    axes += list(torch.randn(5, 3, dtype=torch.float64, generator=gen(4)))
    R2 = rand_rotation(1, generator=gen(5))[0]
    x = torch.randn(32, 3, dtype=torch.float64, generator=gen(6))
    for n in axes:
        R = rotation_180(n)
        for l in [1, 2, 5, 8]:
            D = wigner_D(l, R)
            eye = torch.eye(2 * l + 1, dtype=torch.float64)
            assert (D @ D - eye).abs().max() < 1e-13  # an involution
            assert (wigner_D(l, R @ R2) - D @ wigner_D(l, R2)).abs().max() < 1e-13
            assert (spherical_harmonics(l, x @ R.T) - spherical_harmonics(l, x) @ D.T).abs().max() < 1e-13
    # just below 180 degrees, where the quaternion's w -> 0
    n = axes[-1] / axes[-1].norm()
    for delta in [1e-6, 1e-10, 1e-14]:
        R = expm_rotation((math.pi - delta) * n)
        D = wigner_D(5, R)
        ref = torch.linalg.matrix_exp((math.pi - delta) * torch.einsum("a,aij->ij", n, so3_generators(5)))
        assert (D - ref).abs().max() < 1e-13


def test_quaternion_is_stable():
    R = rand_rotation(100, generator=gen(7))
    q = matrix_to_quaternion(R)
    assert (q.norm(dim=-1) - 1).abs().max() < 1e-15 and (q[:, 0] >= 0).all()
    w, x, y, z = q.unbind(-1)
    # rebuild R from q exactly as minequi.testing.rand_rotation does
    R2 = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)
    assert (R - R2).abs().max() < 1e-14


def test_large_l_and_batch_shapes():
    R = rand_rotation(6, generator=gen(8)).reshape(2, 3, 3, 3)
    D = wigner_D(20, R)
    assert D.shape == (2, 3, 41, 41)
    R1, R2 = R[0, 0], R[1, 2]
    assert (wigner_D(20, R1 @ R2) - wigner_D(20, R1) @ wigner_D(20, R2)).abs().max() < 1e-12
    assert (D @ D.transpose(-1, -2) - torch.eye(41, dtype=torch.float64)).abs().max() < 1e-12


def test_float32():
    R = rand_rotation(20, generator=gen(9))
    D64 = wigner_D(6, R)
    D32 = wigner_D(6, R.float())
    assert D32.dtype == torch.float32
    assert (D32.double() - D64).abs().max() < 1e-5


# ----------------------------------------------------------------------------- negative controls
def test_negative_control_transposed_D_fails():
    """D(R)^T = D(R^-1): using it (a wrong-way convention) must break Y(Rx) = D(R)Y(x) and be caught."""
    x = torch.randn(16, 3, dtype=torch.float64, generator=gen(10))
    for l in [1, 2, 4]:
        err = equivariance_error(
            lambda x: spherical_harmonics(l, x), x, haar_so3,
            act_in=lambda R, x: x @ R.T, act_out=lambda R, y: y @ wigner_D(l, R), n_samples=4,
        )
        assert err > 0.1


def test_negative_control_wrong_sign_generators_fail():
    """exp(-omega . J) (the opposite sign convention) is a valid-looking orthogonal matrix but breaks both properties."""
    R1, R2 = rand_rotation(2, generator=gen(11))
    from minequi.so3 import _rotation_vector

    def wrong_D(l, R):
        return torch.linalg.matrix_exp(-torch.einsum("a,aij->ij", _rotation_vector(R), so3_generators(l)))

    for l in [1, 3]:
        assert (wrong_D(l, R1) - wigner_D(l, R1)).abs().max() > 0.1
        x = torch.randn(8, 3, dtype=torch.float64, generator=gen(12))
        rel = (spherical_harmonics(l, x @ R1.T) - spherical_harmonics(l, x) @ wrong_D(l, R1).T).abs().max()
        assert rel > 0.1
        # exp(-w.J) is the anti-homomorphism R -> D(R^-1): D(R1R2) != D(R1)D(R2)
        assert (wrong_D(l, R1 @ R2) - wrong_D(l, R1) @ wrong_D(l, R2)).abs().max() > 0.1


# ----------------------------------------------------------------------------- validation
def test_bad_inputs():
    R = rand_rotation(3, generator=gen())
    with pytest.raises(ValueError, match=r"R must have shape \[\.\.\., 3, 3\], got \(3, 4\)"):
        wigner_D(1, torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"R must have shape \[\.\.\., 3, 3\]"):
        wigner_D(1, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"R must be orthogonal .* max \|R R\^T - I\| = 1\.0e\+00"):
        wigner_D(1, 2 ** 0.5 * R)
    with pytest.raises(ValueError, match=r"R must be orthogonal"):
        wigner_D(1, R + 1e-4)
    with pytest.raises(ValueError, match=r"R must be orthogonal"):
        wigner_D(1, torch.full((3, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"det = -1.*Irrep\.D_from_matrix"):
        wigner_D(2, -R)
    with pytest.raises(TypeError, match=r"floating-point"):
        wigner_D(1, torch.eye(3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"torch.Tensor"):
        wigner_D(1, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"l must be a non-negative int, got -1"):
        wigner_D(-1, R)
    with pytest.raises(TypeError, match=r"l must be a non-negative int, got 1\.5"):
        wigner_D(1.5, R)
    with pytest.raises(TypeError, match=r"l must be a non-negative int"):
        so3_generators("2")
    # a rotation that is orthogonal only to float32 accuracy is accepted in float32 and rejected in float64
    check_orthogonal((R + 1e-5).float())
    with pytest.raises(ValueError, match="orthogonal"):
        check_orthogonal((R + 1e-5))
