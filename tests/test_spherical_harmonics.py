"""Tests of minequi.spherical_harmonics: conventions, normalisations, equivariance, edge cases."""
import math

import numpy as np
import pytest
import torch

from minequi.irreps import Irreps
from minequi.so3 import wigner_D
from minequi.spherical_harmonics import SphericalHarmonics, spherical_harmonics
from minequi.testing import assert_equivariant, equivariance_error, haar_o3, haar_so3

NORMS = ["component", "norm", "integral"]
LMAX = 8


def points(n=64, seed=0):
    return torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def sphere_quadrature(n_theta, n_phi):
    """Gauss-Legendre in cos(polar angle) x uniform azimuth: exact for polynomials of degree < min(2 n_theta, n_phi)."""
    u, w = np.polynomial.legendre.leggauss(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    u, phi = np.meshgrid(u, phi, indexing="ij")
    s = np.sqrt(1 - u**2)
    pts = np.stack([s * np.cos(phi), s * np.sin(phi), u], -1).reshape(-1, 3)
    weights = np.repeat(w, n_phi) * (2 * np.pi / n_phi)
    return torch.from_numpy(pts), torch.from_numpy(weights)


# ----------------------------------------------------------------------------- explicit values
def test_l0_l1_values():
    x = points()
    xh = x / x.norm(dim=-1, keepdim=True)
    assert torch.equal(spherical_harmonics(0, x), torch.ones(64, 1, dtype=torch.float64))
    assert (spherical_harmonics(1, x) - math.sqrt(3) * xh).abs().max() < 1e-15
    assert (spherical_harmonics(1, x, normalization="norm") - xh).abs().max() < 1e-15
    assert (spherical_harmonics(1, x, normalization="integral") - math.sqrt(3 / (4 * math.pi)) * xh).abs().max() < 1e-15


def test_l2_matches_textbook_formula_relabelled():
    """Y_2m(x, y, z) = S_2m(z, x, y) with the textbook (polar axis z) real harmonics, "integral" norm."""
    x = points()
    xh = x / x.norm(dim=-1, keepdim=True)
    X, Y, Z = xh[:, 2], xh[:, 0], xh[:, 1]  # relabelling of conventions.py
    c = 0.5 * math.sqrt(15 / math.pi)
    S = torch.stack([
        c * X * Y,                                        # m = -2: xy
        c * Y * Z,                                        # m = -1: yz
        0.25 * math.sqrt(5 / math.pi) * (3 * Z**2 - 1),   # m = 0
        c * X * Z,                                        # m = 1: xz
        0.5 * c * (X**2 - Y**2),                          # m = 2
    ], -1)
    assert (spherical_harmonics(2, x, normalization="integral") - S).abs().max() < 1e-15


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("l", list(range(13)))
def test_component_and_norm_sum_of_squares(l):
    x = points(200, seed=l)
    y = spherical_harmonics(l, x)
    assert (y.pow(2).sum(-1) - (2 * l + 1)).abs().max() < 1e-13 * (2 * l + 1)
    y = spherical_harmonics(l, x, normalization="norm")
    assert (y.pow(2).sum(-1) - 1).abs().max() < 1e-13


def test_integral_normalisation_by_quadrature():
    """Gram matrix of all harmonics l <= 8 over the sphere is the identity (orthonormal, "integral")."""
    pts, w = sphere_quadrature(LMAX + 2, 2 * LMAX + 3)
    Y = spherical_harmonics(list(range(LMAX + 1)), pts, normalization="integral")  # [P, 81]
    gram = Y.T @ (w[:, None] * Y)
    assert (gram - torch.eye(gram.shape[0], dtype=torch.float64)).abs().max() < 1e-13
    # "component": each component has mean square 1 over the sphere
    Yc = spherical_harmonics(list(range(LMAX + 1)), pts)
    mean_sq = (w[:, None] * Yc**2).sum(0) / (4 * math.pi)
    assert (mean_sq - 1).abs().max() < 1e-13


def test_addition_theorem():
    """sum_m Y_lm(a) Y_lm(b) = (2l+1) P_l(a.b) for "component" normalisation."""
    a, b = points(50, 1), points(50, 2)
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    t = (a * b).sum(-1).numpy()
    for l in range(LMAX + 1):
        lhs = (spherical_harmonics(l, a) * spherical_harmonics(l, b)).sum(-1)
        Pl = np.polynomial.legendre.legval(t, [0] * l + [1])
        assert (lhs - (2 * l + 1) * torch.from_numpy(Pl)).abs().max() < 1e-13 * (2 * l + 1)


# ----------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("normalization", NORMS)
def test_rotation_equivariance(normalization):
    ls = list(range(LMAX + 1))
    irreps = Irreps([(1, (l, (-1) ** l)) for l in ls])
    report = assert_equivariant(
        lambda x: spherical_harmonics(ls, x, normalization=normalization), points(), haar_so3,
        act_in=lambda R, x: x @ R.T, act_out=lambda R, y: y @ irreps.D_from_matrix(R).T, n_samples=16, atol=1e-13,
    )
    assert report.max_error < 1e-13


def test_o3_equivariance_with_parity():
    """Y^l is a (l, (-1)^l) feature: Y(Q x) = D^{l,(-1)^l}(Q) Y(x) for reflections too."""
    ls = list(range(LMAX + 1))
    irreps = Irreps([(1, (l, (-1) ** l)) for l in ls])
    assert_equivariant(
        lambda x: spherical_harmonics(ls, x), points(), haar_o3,
        act_in=lambda Q, x: x @ Q.T, act_out=lambda Q, y: y @ irreps.D_from_matrix(Q).T, n_samples=16, atol=1e-13,
    )


def test_parity():
    x = points()
    for l in range(LMAX + 1):
        assert (spherical_harmonics(l, -x) - (-1) ** l * spherical_harmonics(l, x)).abs().max() < 1e-14


def test_negative_control_permuted_components_fail():
    """Swapping two m components of Y^2 must be reported as not equivariant."""
    perm = [1, 0, 2, 3, 4]
    err = equivariance_error(
        lambda x: spherical_harmonics(2, x)[:, perm], points(), haar_so3,
        act_in=lambda R, x: x @ R.T, act_out=lambda R, y: y @ wigner_D(2, R).T, n_samples=4,
    )
    assert err > 0.1
    # and claiming the wrong parity (2o instead of 2e) fails under reflections
    wrong = Irreps("2o")
    err = equivariance_error(
        lambda x: spherical_harmonics(2, x), points(), haar_o3,
        act_in=lambda Q, x: x @ Q.T, act_out=lambda Q, y: y @ wrong.D_from_matrix(Q).T, n_samples=8,
    )
    assert err > 0.1


# ----------------------------------------------------------------------------- normalize=False
def test_unnormalized_is_homogeneous_harmonic_polynomial():
    x = points(32)
    r = x.norm(dim=-1, keepdim=True)
    for l in range(LMAX + 1):
        for normalization in NORMS:
            y = spherical_harmonics(l, x, normalize=False, normalization=normalization)
            yh = spherical_harmonics(l, x, normalization=normalization)
            assert (y - r**l * yh).abs().max() < 2e-13 * (1 + (r**l).max())  # measured 1.7e-15 (relative)
        # homogeneity: Y(t x) = t^l Y(x), including negative t
        for t in [0.5, -2.0]:
            lhs = spherical_harmonics(l, t * x, normalize=False)
            assert (lhs - t**l * spherical_harmonics(l, x, normalize=False)).abs().max() < 1e-14  # t = 2^k: exact, 0


@pytest.mark.parametrize("l", [2, 3, 6])
def test_unnormalized_is_harmonic(l):
    """The Laplacian of |x|^l Y_lm(x/|x|) vanishes (autograd second derivatives)."""
    x = points(6).requires_grad_(True)
    y = spherical_harmonics(l, x, normalize=False)  # [6, 2l+1]
    for m in range(2 * l + 1):
        (g,) = torch.autograd.grad(y[:, m].sum(), x, create_graph=True)
        lap = sum(torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(3))
        assert lap.abs().max() < 1e-13 * (1 + y.abs().max())  # measured 1.1e-15 (relative)


# ----------------------------------------------------------------------------- autograd
@pytest.mark.parametrize("normalize", [True, False])
def test_autograd_path_equals_fast_path_and_gradcheck(normalize):
    """With x.requires_grad the rows are stacked (autograd); without, written with out=. Same values."""
    ls = [0, 1, 2, 3, 5]
    x = points(7)
    for normalization in NORMS:
        fast = spherical_harmonics(ls, x, normalize=normalize, normalization=normalization)
        slow = spherical_harmonics(ls, x.clone().requires_grad_(True), normalize=normalize, normalization=normalization)
        assert slow.requires_grad and torch.equal(fast, slow.detach())
    xg = points(4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: spherical_harmonics(ls, x, normalize=normalize), (xg,))


# ----------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("normalization", NORMS)
def test_zero_vector(normalization):
    x = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    ls = list(range(5))
    y = spherical_harmonics(ls, x, normalization=normalization)
    assert not torch.isnan(y).any()
    y0 = spherical_harmonics(0, points(1), normalization=normalization)
    assert torch.equal(y[:, 0], y0[:, 0].expand(2))
    assert torch.equal(y[:, 1:], torch.zeros_like(y[:, 1:]))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.zeros_like(g))  # zero gradient at the origin, every l (equivariance)
    # a zero row among normal rows leaves the others untouched
    xs = points(4)
    xs[2] = 0
    y = spherical_harmonics(ls, xs)
    keep = [0, 1, 3]
    assert torch.equal(y[keep], spherical_harmonics(ls, xs[keep]))


def test_list_order_and_repeats():
    x = points()
    ls = [2, 0, 1, 2]
    y = spherical_harmonics(ls, x)
    ref = torch.cat([spherical_harmonics(l, x) for l in ls], -1)
    assert torch.equal(y, ref)
    assert torch.equal(spherical_harmonics((3,), x), spherical_harmonics(3, x))


def test_batch_shapes_and_dtypes():
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    y = spherical_harmonics([0, 1, 2], x)
    assert y.shape == (2, 4, 5, 9)
    assert torch.equal(y.reshape(-1, 9), spherical_harmonics([0, 1, 2], x.reshape(-1, 3)))
    assert spherical_harmonics(3, torch.zeros(0, 3)).shape == (0, 7)
    assert spherical_harmonics(1, torch.ones(3)).shape == (3,)
    y32 = spherical_harmonics(list(range(LMAX + 1)), x.float())
    assert y32.dtype == torch.float32
    assert (y32.double() - spherical_harmonics(list(range(LMAX + 1)), x)).abs().max() < 1e-4


def test_high_l_is_finite_and_normalised():
    x = points(20)
    for l in [20, 40]:
        y = spherical_harmonics(l, x)
        assert (y.pow(2).sum(-1) - (2 * l + 1)).abs().max() < 1e-12 * (2 * l + 1)  # measured 1.3e-14 (l = 40)


def test_module():
    sh = SphericalHarmonics(3, normalization="norm")
    x = points()
    assert torch.equal(sh(x), spherical_harmonics([0, 1, 2, 3], x, normalization="norm"))
    assert torch.equal(SphericalHarmonics([2, 4])(x), spherical_harmonics([2, 4], x))
    assert sh(x.float()).dtype == torch.float32
    assert "ls=[0, 1, 2, 3]" in repr(sh)


def test_bad_inputs():
    x = points()
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 3\], got \(64, 2\)"):
        spherical_harmonics(1, x[:, :2])
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 3\]"):
        spherical_harmonics(1, torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor"):
        spherical_harmonics(1, torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        spherical_harmonics(1, [[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"normalization must be one of .*'integral'.*got 'unit'"):
        spherical_harmonics(1, x, normalization="unit")
    with pytest.raises(ValueError, match=r"l must be a non-negative int, got -1"):
        spherical_harmonics(-1, x)
    with pytest.raises(ValueError, match=r"l must be a non-negative int, got -2"):
        spherical_harmonics([1, -2], x)
    with pytest.raises(TypeError, match=r"l must be a non-negative int, got 1\.5"):
        spherical_harmonics(1.5, x)
    with pytest.raises(ValueError, match=r"non-empty list"):
        spherical_harmonics([], x)
    with pytest.raises(ValueError, match=r"normalization must be one of"):
        SphericalHarmonics(2, normalization="foo")
