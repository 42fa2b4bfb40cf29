"""Tests of minequi.tensor_product.TensorProduct: equivariance under O(3) (reflections
included), agreement with a naive reference, 1x1 -> 0+1+2, selection rules, variance
normalisation, gradients, dtype, errors and negative controls."""
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minequi import TensorProduct
from minequi.clebsch_gordan import clebsch_gordan
from minequi.irreps import Irreps
from minequi.testing import assert_equivariant, equivariance_error, haar_o3

F64 = torch.float64


def act(irreps):
    D = Irreps(irreps)
    return lambda Q, x: x @ D.D_from_matrix(Q).T


def check_tp(tp, x1, x2, weight=None, atol=1e-10):
    """assert_equivariant for tp(x1, x2[, weight]) with Haar O(3) samples."""
    a1, a2, ao = act(tp.irreps_in1), act(tp.irreps_in2), act(tp.irreps_out)
    if weight is None:
        return assert_equivariant(tp, (x1, x2), haar_o3,
                                  act_in=lambda Q, xs: (a1(Q, xs[0]), a2(Q, xs[1])),
                                  act_out=ao, atol=atol)
    return assert_equivariant(tp, (x1, x2, weight), haar_o3,
                              act_in=lambda Q, xs: (a1(Q, xs[0]), a2(Q, xs[1]), xs[2]),
                              act_out=ao, atol=atol)


def reference(tp, x1, x2, weight):
    """Naive implementation: a loop over paths and multiplicities with the formula of the docstring."""
    x1s = [x1[..., s].reshape(*x1.shape[:-1], mul, ir.dim) for s, (mul, ir) in zip(tp.irreps_in1.slices(), tp.irreps_in1)]
    x2s = [x2[..., s].reshape(*x2.shape[:-1], mul, ir.dim) for s, (mul, ir) in zip(tp.irreps_in2.slices(), tp.irreps_in2)]
    batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1], weight.shape[:-1])
    outs = [torch.zeros(*batch, mul, ir.dim, dtype=x1.dtype) for mul, ir in tp.irreps_out]
    for p in tp.paths:
        C = clebsch_gordan(p.l1, p.l2, p.l3).to(x1.dtype)
        W = weight[..., p.weight_start:p.weight_stop].reshape(*weight.shape[:-1], p.mul_in1, p.mul_in2, p.mul_out)
        for u in range(p.mul_in1):
            for v in range(p.mul_in2):
                z = torch.einsum("...i,...j,ijk->...k", x1s[p.i_in1][..., u, :], x2s[p.i_in2][..., v, :], C)
                outs[p.i_out] = outs[p.i_out] + p.alpha * W[..., u, v, :, None] * z[..., None, :]
    return torch.cat([o.reshape(*batch, -1) for o in outs], dim=-1)


irrep = st.tuples(st.integers(1, 3), st.integers(0, 3), st.sampled_from(["e", "o"]))
irreps = st.lists(irrep, min_size=1, max_size=3).map(lambda t: "+".join(f"{m}x{l}{p}" for m, l, p in t))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(irreps, irreps, irreps, st.booleans())
def test_equivariant_random_irreps(i1, i2, io, per_sample):
    try:
        tp = TensorProduct(i1, i2, io, shared_weights=not per_sample)
    except ValueError:
        assume(False)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(5, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(5, tp.irreps_in2.dim, dtype=F64, generator=g)
    if per_sample:
        w = torch.randn(5, tp.weight_numel, dtype=F64, generator=g)
        report = check_tp(tp, x1, x2, w)
        torch.testing.assert_close(tp(x1, x2, w), reference(tp, x1, x2, w), atol=1e-12, rtol=0)
    else:
        report = check_tp(tp.double(), x1, x2)
        torch.testing.assert_close(tp(x1, x2), reference(tp, x1, x2, tp.weight), atol=1e-12, rtol=0)
    assert report.max_error < 1e-10


def test_equivariant_high_l_and_multiplicities():
    tp = TensorProduct("3x0e+2x1o+2x2e+2x3o+1x4e", "0e+1o+2e+3o", "2x0e+3x1o+2x2e+2x3o+2x4e+1x1e").double()
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(4, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(4, tp.irreps_in2.dim, dtype=F64, generator=g)
    report = check_tp(tp, x1, x2)
    print("TP up to l=4, max error", report.max_error)
    assert report.max_error < 1e-10
    w = torch.randn(4, tp.weight_numel, dtype=F64, generator=g)
    assert check_tp(tp, x1, x2, w).max_error < 1e-10


def test_fast_paths_match_reference_and_each_other():
    tp = TensorProduct("3x0e+2x1o+2x2e", "2x0e+1o+2x2o", "2x0e+2x1o+1e+2x2e+3o").double()
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(6, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(6, tp.irreps_in2.dim, dtype=F64, generator=g)
    w = torch.randn(tp.weight_numel, dtype=F64, generator=g)
    ref = reference(tp, x1, x2, w)
    torch.testing.assert_close(tp(x1, x2, w), ref, atol=1e-12, rtol=0)  # shared code path
    torch.testing.assert_close(tp(x1, x2, w.expand(6, -1)), ref, atol=1e-12, rtol=0)  # per-sample path


def test_broadcasting_batch_shapes():
    tp = TensorProduct("2x0e+1x1o", "0e+1o", "1x0e+2x1o", shared_weights=False).double()
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(4, 1, tp.irreps_in1.dim, dtype=F64, generator=g)  # e.g. nodes
    x2 = torch.randn(1, 5, tp.irreps_in2.dim, dtype=F64, generator=g)  # e.g. edges
    w = torch.randn(5, tp.weight_numel, dtype=F64, generator=g)  # per edge
    y = tp(x1, x2, w)
    assert y.shape == (4, 5, tp.irreps_out.dim)
    for a in range(4):
        for b in range(5):
            torch.testing.assert_close(y[a, b], tp(x1[a, 0], x2[0, b], w[b]), atol=1e-12, rtol=0)


def test_one_times_one_is_dot_cross_symmetric_traceless():
    tp = TensorProduct("1o", "1o", "0e+1e+2e", path_normalization="none").double()
    assert [(p.l1, p.l2, p.l3) for p in tp.paths] == [(1, 1, 0), (1, 1, 1), (1, 1, 2)]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(10, 3, dtype=F64, generator=g)
    y = torch.randn(10, 3, dtype=F64, generator=g)
    out = tp(x, y, torch.ones(3, dtype=F64))  # every weight = 1
    s, c, q = out[:, :1], out[:, 1:4], out[:, 4:]
    # 0e: the dot product / sqrt(3)
    torch.testing.assert_close(s[:, 0], (x * y).sum(-1) / math.sqrt(3), atol=1e-14, rtol=0)
    # 1e: the cross product / sqrt(2) (a pseudovector)
    torch.testing.assert_close(c, torch.cross(x, y, dim=-1) / math.sqrt(2), atol=1e-14, rtol=0)
    # 2e: the symmetric traceless part of x y^T, in the orthonormal basis C[:, :, k]
    C2 = clebsch_gordan(1, 1, 2)
    M = torch.einsum("ijk,bk->bij", C2, q)
    xy = x[:, :, None] * y[:, None, :]
    sym = (xy + xy.transpose(1, 2)) / 2 - torch.eye(3, dtype=F64) * (x * y).sum(-1)[:, None, None] / 3
    torch.testing.assert_close(M, sym, atol=1e-14, rtol=0)
    # and the three parts together hold all of x y^T (9 = 1 + 3 + 5)
    anti = torch.einsum("ijk,bk->bij", clebsch_gordan(1, 1, 1), c)
    iso = torch.eye(3, dtype=F64) * s[:, :, None] / math.sqrt(3)
    torch.testing.assert_close(iso + anti + M, xy, atol=1e-14, rtol=0)


def test_parity_selection_rule():
    # 1o x 1o has parity (-1)(-1) = +1: it can produce 1e (cross product) but never 1o
    with pytest.raises(ValueError, match="no allowed path"):
        TensorProduct("1o", "1o", "1o")
    tp = TensorProduct("1o", "1o", "1o+1e").double()
    assert [(p.i_out, p.l3) for p in tp.paths] == [(1, 1)]
    x, y = torch.randn(7, 3, dtype=F64), torch.randn(7, 3, dtype=F64)
    out = tp(x, y)
    assert torch.equal(out[:, :3], torch.zeros(7, 3, dtype=F64))  # 1o part: no path reaches it
    assert out[:, 3:].abs().max() > 0.01
    # under the inversion -I a 1e output keeps its sign while the inputs flip
    torch.testing.assert_close(tp(-x, -y), out, atol=1e-14, rtol=0)
    # triangle rule: 1 x 1 cannot produce l = 3
    with pytest.raises(ValueError, match="no allowed path"):
        TensorProduct("1o", "1o", "3o+3e")


def _variances(tp, x1, x2, w=None):
    y = tp(x1, x2) if w is None else tp(x1, x2, w)
    return [float(y[:, s].pow(2).mean()) for s in tp.irreps_out.slices()]


def test_output_variance_is_one():
    torch.manual_seed(5)
    irr = "16x0e+16x1o+16x2e"
    tp = TensorProduct(irr, "0e+1o+2e", irr)
    x1, x2 = torch.randn(4000, tp.irreps_in1.dim), torch.randn(4000, tp.irreps_in2.dim)
    with torch.no_grad():
        var = _variances(tp, x1, x2)
        print("output variance per irrep (shared weights):", [round(v, 3) for v in var])
        assert all(0.8 < v < 1.25 for v in var), var
        tpp = TensorProduct(irr, "0e+1o+2e", irr, shared_weights=False)
        w = torch.randn(4000, tp.weight_numel)
        var = _variances(tpp, x1, x2, w)
        print("output variance per irrep (per-sample weights):", [round(v, 3) for v in var])
        assert all(0.8 < v < 1.25 for v in var), var
        tpath = TensorProduct(irr, "0e+1o+2e", irr, path_normalization="path")
        assert all(0.8 < v < 1.25 for v in _variances(tpath, x1, x2))
        # the check can fail: without normalisation the variance is the fan-in (48 or 64)
        tnone = TensorProduct(irr, "0e+1o+2e", irr, path_normalization="none")
        assert all(v > 30 for v in _variances(tnone, x1, x2))


def test_gradients_flow_and_gradcheck():
    tp = TensorProduct("2x0e+1x1o+1x2e", "0e+1o", "1x0e+2x1o+1x2e")
    x1 = torch.randn(8, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(8, tp.irreps_in2.dim, requires_grad=True)
    tp(x1, x2).pow(2).sum().backward()
    for t in (x1.grad, x2.grad, tp.weight.grad):
        assert t is not None and torch.isfinite(t).all() and t.abs().sum() > 0
    tp = tp.double()
    a = torch.randn(3, tp.irreps_in1.dim, dtype=F64, requires_grad=True)
    b = torch.randn(3, tp.irreps_in2.dim, dtype=F64, requires_grad=True)
    w = torch.randn(tp.weight_numel, dtype=F64, requires_grad=True)
    ws = torch.randn(3, tp.weight_numel, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, w: tp(a, b, w), (a, b, w))
    assert torch.autograd.gradcheck(lambda a, b, w: tp(a, b, w), (a, b, ws))


def test_dtype_and_device_follow_input():
    tp = TensorProduct("2x0e+1x1o", "1o", "1x0e+1x1o")
    x1, x2 = torch.randn(3, 5), torch.randn(3, 3)
    assert tp(x1, x2).dtype == torch.float32
    tp64 = tp.double()
    y = tp64(x1.double(), x2.double())
    assert y.dtype == F64 and y.device == x1.device
    # the CG coefficients stay exact in float64 after a float32 construction
    assert check_tp(tp64, x1.double(), x2.double()).max_error < 1e-12


def test_bad_inputs():
    tp = TensorProduct("2x0e+1x1o", "0e+1o", "1x0e+1x1o")
    with pytest.raises(ValueError, match=r"x1 must have shape \[\.\.\., 5\] for irreps 2x0e\+1x1o"):
        tp(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"x2 must have shape \[\.\.\., 4\]"):
        tp(torch.randn(3, 5), torch.randn(3, 3))
    with pytest.raises(ValueError, match="do not broadcast"):
        tp(torch.randn(3, 5), torch.randn(2, 4))
    with pytest.raises(ValueError, match=rf"weight must have shape \[{tp.weight_numel}\]"):
        tp(torch.randn(3, 5), torch.randn(3, 4), torch.randn(tp.weight_numel + 1))
    with pytest.raises(ValueError, match="batch shape of weight"):
        tp(torch.randn(3, 5), torch.randn(3, 4), torch.randn(2, tp.weight_numel))
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor"):
        tp([1.0] * 5, torch.randn(4))
    tpp = TensorProduct("2x0e+1x1o", "0e+1o", "1x0e+1x1o", shared_weights=False)
    assert tpp.weight is None
    with pytest.raises(ValueError, match="no internal weights"):
        tpp(torch.randn(3, 5), torch.randn(3, 4))
    with pytest.raises(ValueError, match="path_normalization"):
        TensorProduct("0e", "0e", "0e", path_normalization="bogus")
    with pytest.raises(ValueError, match="internal_weights=True requires shared_weights=True"):
        TensorProduct("0e", "0e", "0e", shared_weights=False, internal_weights=True)
    with pytest.raises(ValueError, match="irreps_in1"):
        TensorProduct("2y1", "0e", "0e")


def test_negative_control_random_cg_is_not_equivariant():
    tp = TensorProduct("2x1o+1x2e", "1o+2e", "2x1o+2x2e").double()
    g = torch.Generator().manual_seed(6)
    x1 = torch.randn(4, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(4, tp.irreps_in2.dim, dtype=F64, generator=g)
    assert check_tp(tp, x1, x2).max_error < 1e-10
    for name, buf in list(tp.named_buffers()):  # replace every CG tensor by a random one
        setattr(tp, name, torch.randn(buf.shape, dtype=F64, generator=g))
    with pytest.raises(AssertionError, match="not equivariant"):
        check_tp(tp, x1, x2)
    a1, a2, ao = act(tp.irreps_in1), act(tp.irreps_in2), act(tp.irreps_out)
    err = equivariance_error(tp, (x1, x2), haar_o3, act_in=lambda Q, xs: (a1(Q, xs[0]), a2(Q, xs[1])), act_out=ao)
    assert err > 1e-2
