"""Tests of the shared equivariance checker, including its negative controls:
functions that are *not* equivariant must be reported as such."""
import math

import pytest
import torch

from minequi.testing import (
    assert_equivariant,
    e3_sampler,
    equivariance_error,
    equivariance_report,
    haar_o3,
    haar_so3,
    permutation_sampler,
    product_sampler,
    rand_orthogonal,
    rand_rotation,
    shift2d_sampler,
)

rotate = lambda Q, x: x @ Q.T  # noqa: E731  (the action x -> Q x on row vectors)


# ---------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------
def test_rand_rotation_is_special_orthogonal():
    R = rand_rotation(500, generator=torch.Generator().manual_seed(1))
    eye = torch.eye(3, dtype=torch.float64)
    assert (R @ R.transpose(-1, -2) - eye).abs().max() < 1e-14
    assert (torch.linalg.det(R) - 1).abs().max() < 1e-14


def test_rand_rotation_is_haar_distributed():
    """Moments of the Haar measure on SO(3): E[R_ij] = 0, E[R_ij^2] = 1/3, E[tr R] = 0,
    E[(tr R)^2] = 1 (the trace is the character of the 3-dim irrep, whose squared norm is 1).
    The rotation angle has density (1 - cos t)/pi on [0, pi]: P(t < pi/2) = 1/2 - 1/pi."""
    n = 200_000
    R = rand_rotation(n, generator=torch.Generator().manual_seed(2))
    se = 1 / math.sqrt(n)  # standard errors are O(1/sqrt(n)); 6 sigma bounds
    assert R.mean(0).abs().max() < 6 * se
    assert ((R**2).mean(0) - 1 / 3).abs().max() < 6 * se
    tr = R.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(tr.mean()) < 6 * se * 1.0
    assert abs((tr**2).mean() - 1) < 6 * se * 2.0
    angle = torch.arccos(((tr - 1) / 2).clamp(-1, 1))
    p = (angle < math.pi / 2).double().mean()
    assert abs(p - (0.5 - 1 / math.pi)) < 6 * se


def test_rand_rotation_negative_control_uniform_euler_angles_is_not_haar():
    """Uniform Euler angles (a common mistake) over-sample small polar angles; the same
    moment test catches it, which shows the Haar test above can fail."""
    n = 200_000
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.rand(n, generator=g, dtype=torch.float64) * s for s in (2 * math.pi, math.pi, 2 * math.pi))

    def rz(t):
        z, o = torch.zeros_like(t), torch.ones_like(t)
        return torch.stack([t.cos(), -t.sin(), z, t.sin(), t.cos(), z, z, z, o], -1).reshape(-1, 3, 3)

    def ry(t):
        z, o = torch.zeros_like(t), torch.ones_like(t)
        return torch.stack([t.cos(), z, t.sin(), z, o, z, -t.sin(), z, t.cos()], -1).reshape(-1, 3, 3)

    R = rz(a) @ ry(b) @ rz(c)
    se = 1 / math.sqrt(n)
    assert ((R[:, 2, 2] ** 2).mean() - 1 / 3).abs() > 6 * se  # Haar would give 1/3


def test_rand_orthogonal_has_both_determinants_equally_often():
    Q = rand_orthogonal(4000, generator=torch.Generator().manual_seed(4))
    det = torch.linalg.det(Q)
    assert ((det.abs() - 1).abs() < 1e-13).all()
    frac = (det < 0).double().mean()
    assert abs(frac - 0.5) < 0.05
    assert (Q @ Q.transpose(-1, -2) - torch.eye(3, dtype=Q.dtype)).abs().max() < 1e-14


def test_single_samples_and_dtype():
    assert rand_rotation().shape == (3, 3)
    assert rand_orthogonal(dtype=torch.float32).dtype == torch.float32
    with pytest.raises(TypeError, match="n must be"):
        rand_rotation(2.5)
    with pytest.raises(TypeError, match="n must be"):
        rand_orthogonal(-1)


def test_sampler_factories_validate():
    with pytest.raises(ValueError, match="height and width"):
        shift2d_sampler(0, 3)
    with pytest.raises(ValueError, match="n must be positive"):
        permutation_sampler(0)
    with pytest.raises(ValueError, match="at least one sampler"):
        product_sampler()


# ---------------------------------------------------------------------------
# Positive checks: equivariant functions pass at float64 precision
# ---------------------------------------------------------------------------
def test_o3_equivariant_and_invariant_functions_pass():
    x = torch.randn(7, 3, dtype=torch.float64)
    # centroid is O(3)-equivariant, pairwise distances invariant
    assert equivariance_error(lambda x: x.mean(0), x, haar_o3, rotate, lambda Q, y: y @ Q.T) < 1e-14
    assert equivariance_error(torch.cdist, (x, x), haar_o3,
                              lambda Q, a: (rotate(Q, a[0]), rotate(Q, a[1])), lambda Q, y: y) < 1e-13


def test_e3_times_permutation_for_a_point_cloud():
    """Mean-centred positions: E(3)-equivariant only up to translation removal, and
    permutation-equivariant. Acting with (Q, t, p): x -> (x @ Q.T + t)[p]."""
    n = 6
    x = torch.randn(n, 3, dtype=torch.float64)
    f = lambda x: x - x.mean(0)  # noqa: E731
    sample = product_sampler(e3_sampler(), permutation_sampler(n))
    act_in = lambda g, x: (x @ g[0][0].T + g[0][1])[g[1]]  # noqa: E731
    act_out = lambda g, y: (y @ g[0][0].T)[g[1]]  # noqa: E731
    report = assert_equivariant(f, x, sample, act_in, act_out, n_samples=16)
    assert report.max_error < 1e-13
    assert len(report.errors) == 16


def test_circular_shift_equivariance_of_circular_convolution():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=True)
    x = torch.randn(1, 2, 9, 11)
    shift = lambda s, x: torch.roll(x, shifts=s, dims=(-2, -1))  # noqa: E731
    err = equivariance_error(conv, x, shift2d_sampler(9, 11), shift, shift, n_samples=10)
    assert err < 1e-13


def test_nn_module_is_checked_in_float64_without_mutating_it():
    lin = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3) * 2)
    x = torch.randn(5, 3)
    assert equivariance_error(lin, x, haar_o3, rotate, rotate) < 1e-14
    assert lin.weight.dtype == torch.float32  # the caller's module is untouched


# ---------------------------------------------------------------------------
# Negative controls: non-equivariant functions must FAIL
# ---------------------------------------------------------------------------
def test_negative_control_fixed_direction_is_not_rotation_equivariant():
    x = torch.randn(5, 3, dtype=torch.float64)
    f = lambda x: x + torch.tensor([1.0, 0.0, 0.0], dtype=x.dtype)  # noqa: E731
    err = equivariance_error(f, x, haar_so3, rotate, rotate)
    assert err > 0.1
    with pytest.raises(AssertionError, match=r"not equivariant: max \|f\(g.x\) - g.f\(x\)\| = .* at sample \d+, output 0, entry \(\d+, \d+\)"):
        assert_equivariant(f, x, haar_so3, rotate, rotate)


def test_negative_control_rotation_equivariant_but_not_reflection_equivariant():
    """The cross product of two vectors is a pseudovector: equivariant under SO(3) as a
    vector, but not under reflections. Checking with O(3) samples must catch it; this is
    why the samplers include reflections."""
    x = torch.randn(2, 3, dtype=torch.float64)
    f = lambda a, b: torch.linalg.cross(a, b)  # noqa: E731
    act_in = lambda Q, ab: (rotate(Q, ab[0]), rotate(Q, ab[1]))  # noqa: E731
    assert equivariance_error(f, (x[0], x[1]), haar_so3, act_in, rotate) < 1e-13
    assert equivariance_error(f, (x[0], x[1]), haar_o3, act_in, rotate, n_samples=16) > 0.1
    # ... and it *is* O(3)-equivariant as a pseudovector: Q -> det(Q) Q
    pseudo = lambda Q, y: torch.linalg.det(Q) * rotate(Q, y)  # noqa: E731
    assert equivariance_error(f, (x[0], x[1]), haar_o3, act_in, pseudo, n_samples=16) < 1e-13


def test_negative_control_zero_padding_breaks_shift_equivariance():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="zeros")
    x = torch.randn(1, 1, 8, 8)
    shift = lambda s, x: torch.roll(x, shifts=s, dims=(-2, -1))  # noqa: E731
    report = equivariance_report(conv, x, shift2d_sampler(8, 8), shift, shift, n_samples=10)
    assert report.max_error > 1e-3
    assert 0 <= report.worst_sample < 10


def test_negative_control_permutation_sensitive_readout():
    x = torch.randn(6, 4, dtype=torch.float64)
    f = lambda x: x[0] * 2  # noqa: E731  (depends on node order)
    err = equivariance_error(f, x, permutation_sampler(6), lambda p, x: x[p], lambda p, y: y)
    assert err > 1e-3


def test_nan_outputs_are_reported_as_infinite_error():
    x = torch.randn(4, 3, dtype=torch.float64)
    f = lambda x: x / 0 * 0  # noqa: E731  (NaN everywhere)
    assert equivariance_error(f, x, haar_so3, rotate, rotate) == float("inf")


def test_structural_errors_are_clear():
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        equivariance_error(lambda x: x, x, haar_so3, rotate, lambda Q, y: y[:2])
    with pytest.raises(ValueError, match="outputs"):
        equivariance_error(lambda x: x, x, haar_so3, rotate, lambda Q, y: (y, y))
    with pytest.raises(TypeError, match="callable"):
        equivariance_error(3, x, haar_so3, rotate, rotate)
    with pytest.raises(ValueError, match="n_samples"):
        equivariance_error(lambda x: x, x, haar_so3, rotate, rotate, n_samples=0)
