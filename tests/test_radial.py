"""Tests of minequi.radial (Bessel basis, polynomial cutoff) against the sympy derivation."""
import math

import numpy as np
import pytest
import sympy as sp
import torch

from minequi.radial import BesselBasis, PolynomialCutoff
from minequi.symbolic import radial as sym


def grid(c, n=401, beyond=1.3, dtype=torch.float64):
    return torch.linspace(0.0, beyond * c, n, dtype=dtype)


# ----------------------------------------------------------------------------- symbolic
@pytest.mark.parametrize("p", [2, 3, 5, 6, 9])
def test_envelope_derivation_vanishes_to_second_order(p):
    assert sym.check_envelope(p) == {"u(0)": 1, "u(1)": 0, "u'(1)": 0, "u''(1)": 0}
    u = sym.polynomial_envelope(p)
    assert sp.diff(u, sym.d, 3).subs(sym.d, 1) != 0  # exactly second order, not more


def test_envelope_coefficients_for_symbolic_p():
    sol = sym.envelope_coefficients()
    p = sp.Symbol("p", positive=True, integer=True)
    a, b, c = sp.symbols("a b c")
    assert sp.simplify(sol[a] + (p + 1) * (p + 2) / 2) == 0
    assert sp.simplify(sol[b] - p * (p + 2)) == 0
    assert sp.simplify(sol[c] + p * (p + 1) / 2) == 0


def test_negative_control_cosine_cutoff_is_not_c2():
    """The cosine cutoff 0.5 (cos(pi d) + 1) is C^1 but not C^2 at d = 1: the check above would catch it."""
    d = sym.d
    u = (sp.cos(sp.pi * d) + 1) / 2
    vals = [sp.simplify(sp.diff(u, d, k).subs(d, 1)) for k in range(3)]
    assert vals[0] == 0 and vals[1] == 0 and vals[2] != 0


def test_bessel_basis_is_orthonormal_and_has_the_limit():
    assert sym.bessel_gram(3, sp.Rational(5, 2)) == sp.eye(3)
    for n in (1, 2, 5):
        assert sp.simplify(sym.bessel_limit_at_zero(n, 5) - sp.sqrt(sp.Rational(2, 5)) * n * sp.pi / 5) == 0


# ----------------------------------------------------------------------------- numeric == symbolic
@pytest.mark.parametrize("p", [3, 6, 8])
@pytest.mark.parametrize("c", [1.0, 5.0])
def test_polynomial_cutoff_matches_symbolic(p, c):
    r = grid(c)
    u_sym = sp.lambdify(sym.d, sym.polynomial_envelope(p), "numpy")
    du_sym = sp.lambdify(sym.d, sp.diff(sym.polynomial_envelope(p), sym.d), "numpy")
    d = r.numpy() / c
    want = np.where(d < 1, u_sym(d), 0.0)
    dwant = np.where(d < 1, du_sym(d) / c, 0.0)
    r.requires_grad_(True)
    u = PolynomialCutoff(c, p=p)(r)
    (du,) = torch.autograd.grad(u.sum(), r)
    np.testing.assert_allclose(u.detach().numpy(), want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(du.numpy(), dwant, rtol=0, atol=1e-12)
    # negative control: the envelope of another p differs by far more than the tolerance
    other = PolynomialCutoff(c, p=p + 1)(r.detach())
    assert np.abs(other.numpy() - want).max() > 1e-2


@pytest.mark.parametrize("c", [1.5, 5.0])
def test_bessel_basis_matches_symbolic(c):
    num = 6
    r = grid(c, n=301)
    b = BesselBasis(num, c)(r)
    assert b.shape == (301, num) and b.dtype == torch.float64
    for n in range(1, num + 1):
        f = sp.lambdify(sym.r, sym.bessel_basis(n, c), "numpy")
        with np.errstate(divide="ignore", invalid="ignore"):
            want = f(r.numpy())
        want[0] = float(sym.bessel_limit_at_zero(n, c))  # r = 0: the limit
        np.testing.assert_allclose(b[:, n - 1].numpy(), want, rtol=0, atol=1e-12)
    # numeric orthonormality on the ball (trapezoid rule, fine grid)
    rr = torch.linspace(0, c, 20001, dtype=torch.float64)
    e = BesselBasis(num, c)(rr)
    gram = torch.trapezoid(e[:, :, None] * e[:, None, :] * rr[:, None, None] ** 2, rr, dim=0)
    torch.testing.assert_close(gram, torch.eye(num, dtype=torch.float64), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- dtypes and gradients
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input_and_float32_agrees(dtype):
    r64 = grid(4.0, n=101)
    r = r64.to(dtype)
    basis, env = BesselBasis(5, 4.0), PolynomialCutoff(4.0)
    assert basis(r).dtype == dtype and env(r).dtype == dtype
    atol = 1e-5 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(basis(r).double(), basis(r64), rtol=0, atol=atol)
    torch.testing.assert_close(env(r).double(), env(r64), rtol=0, atol=atol)
    assert basis(torch.zeros(0, dtype=dtype)).shape == (0, 5)
    assert basis(torch.zeros(2, 3, dtype=dtype)).shape == (2, 3, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_zero_and_at_cutoff(dtype):
    c = 3.0
    r = torch.tensor([0.0, c, 1.2 * c], dtype=dtype, requires_grad=True)
    basis, env = BesselBasis(4, c), PolynomialCutoff(c)
    y = (basis(r) * env(r)[:, None]).sum()
    (g,) = torch.autograd.grad(y, r, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), r)
    assert bool(torch.isfinite(g).all()) and bool(torch.isfinite(g2).all())
    # d/dr of the basis is 0 at r = 0 (even function of r); envelope: u' = u'' = 0 at and beyond c
    (du,) = torch.autograd.grad(env(r).sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    du = du.detach()
    assert float(du[1].abs()) < 1e-12 and float(d2u[1].abs()) < 1e-10 and float(du[2]) == 0
    (db,) = torch.autograd.grad(basis(r)[0].sum(), r)
    assert float(db[0].abs()) < 1e-12


def test_trainable_frequencies_get_gradients():
    basis = BesselBasis(4, 5.0, trainable=True).double()
    assert [n for n, _ in basis.named_parameters()] == ["frequencies"]
    basis(torch.rand(10, dtype=torch.float64) * 5).sum().backward()
    assert basis.frequencies.grad is not None and bool(torch.isfinite(basis.frequencies.grad).all())
    assert list(BesselBasis(4, 5.0).parameters()) == []
    torch.testing.assert_close(BesselBasis(3, 2.0, trainable=True).frequencies, torch.tensor([1.0, 2.0, 3.0]) * math.pi / 2)


def test_bad_input():
    with pytest.raises(ValueError, match="cutoff"):
        BesselBasis(4, cutoff=0.0)
    with pytest.raises(ValueError, match="num_basis"):
        BesselBasis(0)
    with pytest.raises(ValueError, match="cutoff"):
        PolynomialCutoff(-1.0)
    with pytest.raises(ValueError, match="p must be"):
        PolynomialCutoff(1.0, p=0)
    with pytest.raises(TypeError, match="floating-point"):
        BesselBasis()(torch.arange(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        PolynomialCutoff(1.0)([0.5])
