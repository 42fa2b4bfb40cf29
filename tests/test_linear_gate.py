"""Tests of minequi.linear.Linear and minequi.gate.Gate: O(3) equivariance (reflections
included), normalisation, parity rules, errors, gradients and negative controls."""
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minequi import Gate, Linear, TensorProduct
from minequi.irreps import Irreps
from minequi.testing import assert_equivariant, equivariance_error, haar_o3

F64 = torch.float64


def act(irreps):
    D = Irreps(irreps)
    return lambda Q, x: x @ D.D_from_matrix(Q).T


# Measured float64 equivariance errors (Haar O(3), 8 samples): Linear on random irreps <= 1.3e-15,
# Gate 4.4e-16, TensorProduct -> Gate -> Linear 1.1e-15.  Tolerance 1e-13, about 100x above.
ATOL = 1e-13


def check(f, irreps_in, irreps_out, x, atol=ATOL):
    report = assert_equivariant(f, x, haar_o3, act_in=act(irreps_in), act_out=act(irreps_out), atol=atol)
    print(f"equivariance error {report.max_error:.1e}")
    return report


irrep = st.tuples(st.integers(1, 4), st.integers(0, 3), st.sampled_from(["e", "o"]))
irreps = st.lists(irrep, min_size=1, max_size=4).map(lambda t: "+".join(f"{m}x{l}{p}" for m, l, p in t))


# ---------------------------------------------------------------- Linear
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(irreps, irreps, st.booleans())
def test_linear_equivariant_random_irreps(irreps_in, irreps_out, bias):
    try:
        lin = Linear(irreps_in, irreps_out, bias=bias)
    except ValueError:
        assume(False)
    if lin.bias is not None:
        with torch.no_grad():
            lin.bias.normal_()  # a nonzero bias must still be equivariant (0e outputs only)
    x = torch.randn(6, lin.irreps_in.dim, dtype=F64)
    assert check(lin, lin.irreps_in, lin.irreps_out, x).max_error < ATOL


def test_linear_mixes_only_equal_irreps_and_zero_elsewhere():
    lin = Linear("2x0e+3x1o+1x1e", "4x0e+2x1o+1x2e+1x0o").double()
    assert lin.paths == [(0, 0), (1, 1)]
    x = torch.randn(5, lin.irreps_in.dim, dtype=F64)
    y = lin(x)
    s = lin.irreps_out.slices()
    assert torch.equal(y[:, s[2]], torch.zeros(5, 5, dtype=F64))  # 2e: not in the input
    assert torch.equal(y[:, s[3]], torch.zeros(5, 1, dtype=F64))  # 0o: not in the input
    # 1o block = x_1o (3 copies) mixed by W [3, 2] / sqrt(3), the same for every component m
    W = lin.weight[8:14].reshape(3, 2) / 3 ** 0.5
    expected = torch.einsum("bum,uw->bwm", x[:, 2:11].reshape(5, 3, 3), W).reshape(5, 6)
    torch.testing.assert_close(y[:, s[1]], expected, atol=1e-14, rtol=0)
    assert check(lin, lin.irreps_in, lin.irreps_out, x).max_error < ATOL


def test_linear_two_inputs_same_irrep_and_variance():
    torch.manual_seed(0)
    lin = Linear("8x1o+24x0e+8x1o", "64x1o+64x0e")
    assert lin.paths == [(0, 0), (2, 0), (1, 1)]
    x = torch.randn(4000, lin.irreps_in.dim)
    with torch.no_grad():
        y = lin(x)
    var = [float(y[:, s].pow(2).mean()) for s in lin.irreps_out.slices()]
    print("Linear output variance per irrep:", [round(v, 3) for v in var])
    assert all(0.8 < v < 1.25 for v in var), var


def test_linear_bias_only_on_even_scalars():
    lin = Linear("2x0e+1x1o", "3x0e+1x1o+2x0o", bias=True)
    assert lin.bias.shape == (3,)
    with torch.no_grad():
        lin.bias.fill_(1.0)
    y = lin(torch.zeros(2, lin.irreps_in.dim))
    assert torch.equal(y, torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]] * 2))
    assert Linear("1o", "1o", bias=True).bias is None  # no 0e output: no bias


def test_linear_errors_grad_dtype():
    with pytest.raises(ValueError, match="no irrep of irreps_in=1x1o occurs in irreps_out=1x1e"):
        Linear("1o", "1e")
    lin = Linear("2x0e+1x1o", "1x0e+1x1o")
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 5\] for irreps_in 2x0e\+1x1o"):
        lin(torch.randn(3, 4))
    x = torch.randn(3, 5, requires_grad=True)
    y = lin(x)
    assert y.dtype == torch.float32
    y.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and lin.weight.grad.abs().sum() > 0
    assert lin.double()(x.double()).dtype == F64


def test_linear_negative_control_plain_linear_layer():
    # an unconstrained nn.Linear on the same features is not equivariant
    irr = Irreps("2x0e+2x1o")
    torch.manual_seed(1)
    plain = torch.nn.Linear(irr.dim, irr.dim, bias=False).double()
    x = torch.randn(4, irr.dim, dtype=F64)
    with pytest.raises(AssertionError, match="not equivariant"):
        check(plain, irr, irr, x)


# ---------------------------------------------------------------- Gate
def test_gate_equivariant_and_structure():
    gate = Gate("4x0e+2x0o", [torch.relu, torch.tanh], "3x0e", torch.sigmoid, "2x1o+1x2e")
    assert gate.irreps_in == Irreps("4x0e+2x0o+3x0e+2x1o+1x2e")
    assert gate.irreps_out == Irreps("4x0e+2x0o+2x1o+1x2e")
    x = torch.randn(7, gate.irreps_in.dim, dtype=F64)
    report = check(gate, gate.irreps_in, gate.irreps_out, x)
    assert report.max_error < ATOL
    # what it computes
    y = gate(x)
    torch.testing.assert_close(y[:, :4], torch.relu(x[:, :4]))
    torch.testing.assert_close(y[:, 4:6], torch.tanh(x[:, 4:6]))
    g = torch.sigmoid(x[:, 6:9])
    torch.testing.assert_close(y[:, 6:9], g[:, :1] * x[:, 9:12])
    torch.testing.assert_close(y[:, 9:12], g[:, 1:2] * x[:, 12:15])
    torch.testing.assert_close(y[:, 12:17], g[:, 2:3] * x[:, 15:20])


def test_gate_parity_rules():
    # odd activation on 0o keeps 0o; even activation on 0o gives 0e (both equivariant under reflections)
    g_odd = Gate("2x0o", torch.tanh, "", torch.sigmoid, "")
    g_even = Gate("2x0o", torch.abs, "", torch.sigmoid, "")
    assert g_odd.irreps_out == Irreps("2x0o") and g_even.irreps_out == Irreps("2x0e")
    x = torch.randn(5, 2, dtype=F64)
    for g in (g_odd, g_even):
        assert check(g, g.irreps_in, g.irreps_out, x).max_error < ATOL
    with pytest.raises(ValueError, match="must be odd or even"):
        Gate("2x0o", torch.relu, "", torch.sigmoid, "")
    with pytest.raises(ValueError, match="must be odd or even"):
        Gate("", torch.relu, "1x0o", torch.sigmoid, "1x1o")
    # odd gates with an odd activation flip the parity of the gated irrep
    g = Gate("", torch.relu, "1x0o", torch.tanh, "1x1o")
    assert g.irreps_out == Irreps("1x1e")
    assert check(g, g.irreps_in, g.irreps_out, torch.randn(5, 4, dtype=F64)).max_error < ATOL


def test_gate_errors():
    with pytest.raises(ValueError, match="irreps_gates must contain scalars"):
        Gate("", torch.relu, "1x1o", torch.sigmoid, "1x1o")
    with pytest.raises(ValueError, match="irreps_scalars must contain scalars"):
        Gate("1x1o", torch.relu, "", torch.sigmoid, "")
    with pytest.raises(ValueError, match="one gate per gated irrep copy"):
        Gate("", torch.relu, "2x0e", torch.sigmoid, "3x1o")
    with pytest.raises(ValueError, match="act_scalars must be one callable or one per entry"):
        Gate("1x0e+1x0o", [torch.relu], "", torch.sigmoid, "")
    gate = Gate("1x0e", torch.relu, "1x0e", torch.sigmoid, "1x1o")
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 5\]"):
        gate(torch.randn(2, 4))


def test_gate_negative_control_non_scalar_gate():
    # gating a vector by a function of another vector's first component is not equivariant
    irr = Irreps("1x1o+1x1o")
    bad = lambda x: torch.sigmoid(x[..., :1]) * x[..., 3:]
    x = torch.randn(6, 6, dtype=F64)
    err = equivariance_error(bad, x, haar_o3, act_in=act(irr), act_out=act("1x1o"))
    assert err > 1e-2
    # while a gate by the (invariant) norm is
    good = lambda x: torch.sigmoid(x[..., :3].norm(dim=-1, keepdim=True)) * x[..., 3:]
    assert equivariance_error(good, x, haar_o3, act_in=act(irr), act_out=act("1x1o")) < ATOL


def test_gate_gradients_and_in_a_block():
    # TensorProduct -> Gate -> Linear is equivariant end to end and differentiable
    tp = TensorProduct("4x0e+2x1o", "0e+1o+2e", "4x0e+2x0e+1x1o+1x2e")
    gate = Gate("4x0e", torch.nn.functional.silu, "2x0e", torch.sigmoid, "1x1o+1x2e")
    lin = Linear(gate.irreps_out, "2x0e+1x1o")
    block = lambda x1, x2: lin(gate(tp(x1, x2)))
    x1 = torch.randn(5, 10, dtype=F64)
    x2 = torch.randn(5, 9, dtype=F64)
    tp.double(), lin.double()
    a1, a2 = act(tp.irreps_in1), act(tp.irreps_in2)
    report = assert_equivariant(block, (x1, x2), haar_o3, act_in=lambda Q, xs: (a1(Q, xs[0]), a2(Q, xs[1])),
                                act_out=act(lin.irreps_out), atol=ATOL)
    print(f"TensorProduct -> Gate -> Linear: equivariance error {report.max_error:.1e}")
    assert report.max_error < ATOL
    x1.requires_grad_(True)
    block(x1, x2).pow(2).sum().backward()
    assert x1.grad.abs().sum() > 0 and tp.weight.grad.abs().sum() > 0 and lin.weight.grad.abs().sum() > 0
    g = Gate("2x0e", torch.tanh, "1x0e", torch.sigmoid, "1x2e")
    xg = torch.randn(3, 8, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (xg,))
