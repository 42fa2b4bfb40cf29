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
# Measured (float64, Haar O(3) samples): equivariance error <= 2.7e-14 over 60 random irreps
# triples with l <= 3 and up to l = 4 (1.6e-14); difference to the naive reference <= 1.8e-15.
EQ_TOL = 2e-12
REF_TOL = 2e-13


def act(irreps):
    D = Irreps(irreps)
    return lambda Q, x: x @ D.D_from_matrix(Q).T


def check_tp(tp, x1, x2, weight=None, atol=EQ_TOL):
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
        shape = (p.mul_in1, p.mul_in2, p.mul_out) if p.mode == "uvw" else (p.mul_in1, p.mul_in2)
        W = weight[..., p.weight_start:p.weight_stop].reshape(*weight.shape[:-1], *shape)
        for u in range(p.mul_in1):
            for v in range(p.mul_in2):
                z = torch.einsum("...i,...j,ijk->...k", x1s[p.i_in1][..., u, :], x2s[p.i_in2][..., v, :], C)
                if p.mode == "uvw":  # every output copy w
                    outs[p.i_out] = outs[p.i_out] + p.alpha * W[..., u, v, :, None] * z[..., None, :]
                else:  # "uvu": output copy u only
                    one_hot = torch.zeros(p.mul_out, 1, dtype=x1.dtype)
                    one_hot[u] = 1
                    outs[p.i_out] = outs[p.i_out] + p.alpha * W[..., u, v, None, None] * one_hot * z[..., None, :]
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
        torch.testing.assert_close(tp(x1, x2, w), reference(tp, x1, x2, w), atol=REF_TOL, rtol=0)
    else:
        report = check_tp(tp.double(), x1, x2)
        torch.testing.assert_close(tp(x1, x2), reference(tp, x1, x2, tp.weight), atol=REF_TOL, rtol=0)
    assert report.max_error < EQ_TOL


def test_equivariant_high_l_and_multiplicities():
    tp = TensorProduct("3x0e+2x1o+2x2e+2x3o+1x4e", "0e+1o+2e+3o", "2x0e+3x1o+2x2e+2x3o+2x4e+1x1e").double()
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(4, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(4, tp.irreps_in2.dim, dtype=F64, generator=g)
    report = check_tp(tp, x1, x2)
    print("TP up to l=4, max error", report.max_error)
    assert report.max_error < EQ_TOL
    w = torch.randn(4, tp.weight_numel, dtype=F64, generator=g)
    assert check_tp(tp, x1, x2, w).max_error < EQ_TOL


def test_fast_paths_match_reference_and_each_other():
    tp = TensorProduct("3x0e+2x1o+2x2e", "2x0e+1o+2x2o", "2x0e+2x1o+1e+2x2e+3o").double()
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(6, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(6, tp.irreps_in2.dim, dtype=F64, generator=g)
    w = torch.randn(tp.weight_numel, dtype=F64, generator=g)
    ref = reference(tp, x1, x2, w)
    torch.testing.assert_close(tp(x1, x2, w), ref, atol=REF_TOL, rtol=0)  # shared code path
    torch.testing.assert_close(tp(x1, x2, w.expand(6, -1)), ref, atol=REF_TOL, rtol=0)  # per-sample path


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
            torch.testing.assert_close(y[a, b], tp(x1[a, 0], x2[0, b], w[b]), atol=REF_TOL, rtol=0)


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
    _gradcheck_shared_and_per_sample(tp.double())


def test_dtype_and_device_follow_input():
    tp = TensorProduct("2x0e+1x1o", "1o", "1x0e+1x1o")
    x1, x2 = torch.randn(3, 5), torch.randn(3, 3)
    assert tp(x1, x2).dtype == torch.float32
    tp64 = tp.double()
    y = tp64(x1.double(), x2.double())
    assert y.dtype == F64 and y.device == x1.device
    # the CG coefficients stay exact in float64 after a float32 construction
    assert check_tp(tp64, x1.double(), x2.double()).max_error < EQ_TOL


def test_dtypes_must_match():
    # the library's rule: a module's parameters (or the weight argument) must match its inputs
    tp = TensorProduct("2x0e+1x1o", "0e+1o", "1x0e+1x1o")
    x1, x2 = torch.randn(3, 5), torch.randn(3, 4)
    with pytest.raises(TypeError, match=r"x1 is torch.float64 on cpu, x2 is torch.float32 on cpu and the parameters"):
        tp(x1.double(), x2)
    with pytest.raises(TypeError, match="the parameters \\(internal weights\\) torch.float32"):
        tp(x1.double(), x2.double())
    with pytest.raises(TypeError, match="and weight torch.float64"):
        tp(x1, x2, torch.randn(tp.weight_numel, dtype=F64))
    with pytest.raises(TypeError, match="x1 must be a floating-point tensor, got dtype torch.int64"):
        tp(torch.ones(3, 5, dtype=torch.long), x2)
    assert tp.double()(x1.double(), x2.double()).dtype == F64


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
    assert check_tp(tp, x1, x2).max_error < EQ_TOL
    for name, buf in list(tp.named_buffers()):  # replace every CG tensor by a random one
        setattr(tp, name, torch.randn(buf.shape, dtype=F64, generator=g))
    with pytest.raises(AssertionError, match="not equivariant"):
        check_tp(tp, x1, x2)
    a1, a2, ao = act(tp.irreps_in1), act(tp.irreps_in2), act(tp.irreps_out)
    err = equivariance_error(tp, (x1, x2), haar_o3, act_in=lambda Q, xs: (a1(Q, xs[0]), a2(Q, xs[1])), act_out=ao)
    assert err > 1e-2


# ---------------------------------------------------------------------------
# Precision through dtype round trips (issue 8)
# ---------------------------------------------------------------------------
def _roundtrip_inputs():
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(7)
    tp = TensorProduct("2x0e+2x1o+1x2e", "0e+1o+2e", "2x0e+2x1o+2x2e")
    x1 = torch.randn(8, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(8, tp.irreps_in2.dim, dtype=F64, generator=g)
    return tp, x1, x2


@pytest.mark.parametrize("there", ["float", "half", "bfloat16", "to_float32"])
def test_clebsch_gordan_exact_after_dtype_round_trip(there):
    tp, x1, x2 = _roundtrip_inputs()
    exact = check_tp(tp.double(), x1, x2).max_error
    cast = {"float": lambda m: m.float(), "half": lambda m: m.half(), "bfloat16": lambda m: m.bfloat16(),
            "to_float32": lambda m: m.to(torch.float32)}[there]
    tp = cast(tp).double()
    assert all(b.dtype == F64 for b in tp.buffers())
    err = check_tp(tp, x1, x2).max_error
    print(f"{there} -> double: equivariance error {err:.1e} (never cast: {exact:.1e})")
    assert err < EQ_TOL


def test_low_precision_module_computes_in_input_dtype():
    tp, x1, x2 = _roundtrip_inputs()
    y64 = tp.double()(x1, x2)
    tp = tp.float()
    assert tp.weight.dtype == torch.float32 and all(b.dtype == F64 for b in tp.buffers())
    y32 = tp(x1.float(), x2.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=1e-5)


def test_negative_control_rounded_clebsch_gordan_breaks_float64_equivariance():
    # what `tp.float().double()` did before: every CG buffer rounded to float32
    tp, x1, x2 = _roundtrip_inputs()
    tp = tp.double()
    for name, buf in list(tp.named_buffers()):
        setattr(tp, name, buf.float().double())
    err = equivariance_error(tp, (x1, x2), haar_o3,
                             act_in=lambda Q, xs: (act(tp.irreps_in1)(Q, xs[0]), act(tp.irreps_in2)(Q, xs[1])),
                             act_out=act(tp.irreps_out))
    assert err > 1e-9, err  # measured 1e-7: the rounding shows, so the test above can fail


# ---------------------------------------------------------------------------
# Connection modes: instructions (issue 9)
# ---------------------------------------------------------------------------
IN1, IN2, OUT = "3x0e+2x1o+2x2e", "0e+2x1o+2e", "3x0e+2x1o+2x1e+2x2e"


def _all_allowed(tp_in1, tp_in2, tp_out, mode_for):
    e1, e2, eo = Irreps(tp_in1), Irreps(tp_in2), Irreps(tp_out)
    out = []
    for i1, (m1, r1) in enumerate(e1):
        for i2, (m2, r2) in enumerate(e2):
            for io, (mo, ro) in enumerate(eo):
                if abs(r1.l - r2.l) <= ro.l <= r1.l + r2.l and r1.p * r2.p == ro.p:
                    mode = mode_for(m1, mo)
                    if mode is not None:
                        out.append((i1, i2, io, mode))
    return out


def test_uvu_matches_reference_and_weight_layout():
    ins = _all_allowed(IN1, IN2, OUT, lambda m1, mo: "uvu" if m1 == mo else None)
    tp = TensorProduct(IN1, IN2, OUT, instructions=ins).double()
    assert [(p.i_in1, p.i_in2, p.i_out, p.mode) for p in tp.paths] == ins  # instruction order
    assert tp.weight_numel == sum(Irreps(IN1)[i1].mul * Irreps(IN2)[i2].mul for i1, i2, _, _ in ins)
    g = torch.Generator().manual_seed(8)
    x1 = torch.randn(6, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(6, tp.irreps_in2.dim, dtype=F64, generator=g)
    w = torch.randn(tp.weight_numel, dtype=F64, generator=g)
    ws = torch.randn(6, tp.weight_numel, dtype=F64, generator=g)
    torch.testing.assert_close(tp(x1, x2, w), reference(tp, x1, x2, w), atol=REF_TOL, rtol=0)
    torch.testing.assert_close(tp(x1, x2, w.expand(6, -1)), reference(tp, x1, x2, w), atol=REF_TOL, rtol=0)
    torch.testing.assert_close(tp(x1, x2, ws), reference(tp, x1, x2, ws), atol=REF_TOL, rtol=0)
    # depthwise: output copy u depends on input copy u only
    x1b = x1.clone()
    x1b[:, 1] += 1.0  # change copy u = 1 of the 3x0e entry
    diff = (tp(x1b, x2, w) - tp(x1, x2, w))[:, :3].abs().amax(0)
    assert diff[0] == 0 and diff[2] == 0 and diff[1] > 0


def test_mixed_modes_and_any_instruction_order():
    uvw = _all_allowed(IN1, IN2, OUT, lambda m1, mo: "uvw")
    mixed = [(a, b, c, "uvu" if k % 2 and Irreps(IN1)[a].mul == Irreps(OUT)[c].mul else "uvw")
             for k, (a, b, c, _) in enumerate(uvw)][::-1]  # reversed order, alternating modes
    assert {m for *_, m in mixed} == {"uvw", "uvu"}
    tp = TensorProduct(IN1, IN2, OUT, instructions=mixed).double()
    g = torch.Generator().manual_seed(9)
    x1 = torch.randn(5, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(5, tp.irreps_in2.dim, dtype=F64, generator=g)
    w = torch.randn(5, tp.weight_numel, dtype=F64, generator=g)
    torch.testing.assert_close(tp(x1, x2, w), reference(tp, x1, x2, w), atol=REF_TOL, rtol=0)
    torch.testing.assert_close(tp(x1, x2, w[0]), reference(tp, x1, x2, w[0]), atol=REF_TOL, rtol=0)
    assert check_tp(tp, x1, x2, w).max_error < EQ_TOL
    assert check_tp(tp, x1, x2).max_error < EQ_TOL
    # the default (no instructions) is the fully connected product, in its own order
    full = TensorProduct(IN1, IN2, OUT)
    assert all(p.mode == "uvw" for p in full.paths)
    assert sorted((p.i_in1, p.i_in2, p.i_out) for p in full.paths) == sorted((a, b, c) for a, b, c, _ in uvw)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(irreps, irreps, st.data())
def test_uvu_equivariant_random_irreps(i1, i2, data):
    # output: the input multiplicities with every reachable irrep, so uvu paths exist
    e1, e2 = Irreps(i1), Irreps(i2)
    out = sorted({(m1, l3, r1.p * r2.p) for m1, r1 in e1 for _, r2 in e2
                  for l3 in range(abs(r1.l - r2.l), r1.l + r2.l + 1)})
    io = "+".join(f"{m}x{l}{'e' if p == 1 else 'o'}" for m, l, p in out)
    ins = _all_allowed(i1, i2, io, lambda m1, mo: "uvu" if m1 == mo else None)
    ins = data.draw(st.lists(st.sampled_from(ins), min_size=1, max_size=6))  # any subset, repeats allowed
    per_sample = data.draw(st.booleans())
    tp = TensorProduct(i1, i2, io, instructions=ins, shared_weights=not per_sample)
    g = torch.Generator().manual_seed(10)
    x1 = torch.randn(5, tp.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(5, tp.irreps_in2.dim, dtype=F64, generator=g)
    w = torch.randn(*((5,) if per_sample else ()), tp.weight_numel, dtype=F64, generator=g)
    assert check_tp(tp, x1, x2, w).max_error < EQ_TOL
    torch.testing.assert_close(tp(x1, x2, w), reference(tp, x1, x2, w), atol=REF_TOL, rtol=0)


def test_uvu_output_variance_is_one():
    torch.manual_seed(11)
    irr = "16x0e+16x1o+16x2e"
    ins = _all_allowed(irr, "2x0e+1o+2e", irr, lambda m1, mo: "uvu")
    x1, x2 = torch.randn(4000, Irreps(irr).dim), torch.randn(4000, Irreps("2x0e+1o+2e").dim)
    with torch.no_grad():
        for norm, lo, hi in (("element", 0.8, 1.25), ("path", 0.8, 1.25), ("none", 2.5, 1e9)):
            tp = TensorProduct(irr, "2x0e+1o+2e", irr, instructions=ins, shared_weights=False,
                               path_normalization=norm)
            var = _variances(tp, x1, x2, torch.randn(4000, tp.weight_numel))
            print(f"uvu, {norm}: output variance per irrep", [round(v, 3) for v in var])
            assert all(lo < v < hi for v in var), (norm, var)  # "none": the fan-in (3 to 5 terms)


def _gradcheck_shared_and_per_sample(tp):
    """gradcheck a float64 ``tp`` with shared and with per-sample weights; returns the per-sample inputs."""
    a = torch.randn(3, tp.irreps_in1.dim, dtype=F64, requires_grad=True)
    b = torch.randn(3, tp.irreps_in2.dim, dtype=F64, requires_grad=True)
    w = torch.randn(tp.weight_numel, dtype=F64, requires_grad=True)
    ws = torch.randn(3, tp.weight_numel, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, w: tp(a, b, w), (a, b, w))
    assert torch.autograd.gradcheck(lambda a, b, w: tp(a, b, w), (a, b, ws))
    return a, b, ws


def test_uvu_gradcheck():
    ins = [(0, 0, 0, "uvu"), (1, 1, 0, "uvu"), (1, 0, 1, "uvu"), (0, 1, 1, "uvu"), (1, 1, 2, "uvu")]
    tp = TensorProduct("2x0e+2x1o", "0e+2x1o", "2x0e+2x1o+2x1e", instructions=ins).double()
    a, b, ws = _gradcheck_shared_and_per_sample(tp)
    assert torch.autograd.gradgradcheck(lambda a, b, w: tp(a, b, w), (a, b, ws))


def test_bad_instructions():
    with pytest.raises(ValueError, match=r"mode must be one of \('uvw', 'uvu'\)"):
        TensorProduct("2x1o", "1o", "2x0e", instructions=[(0, 0, 0, "uuu")])
    with pytest.raises(ValueError, match="mode 'uvu' needs mul_out == mul_in1, got 3 and 2"):
        TensorProduct("2x1o", "1o", "3x0e", instructions=[(0, 0, 0, "uvu")])
    with pytest.raises(ValueError, match=r"l1 x l1 -> l1 with parities -1, -1 -> -1 is not allowed"):
        TensorProduct("2x1o", "1o", "2x1o", instructions=[(0, 0, 0, "uvu")])
    with pytest.raises(ValueError, match=r"l0 x l1 -> l2 .* is not allowed"):
        TensorProduct("0e", "1o", "2e", instructions=[(0, 0, 0, "uvw")])
    with pytest.raises(ValueError, match=r"index 1 into irreps_in2 must be an int in \[0, 1\)"):
        TensorProduct("2x1o", "1o", "2x0e", instructions=[(0, 1, 0, "uvu")])
    with pytest.raises(ValueError, match=r"instructions\[1\] must be a tuple \(i_in1, i_in2, i_out, mode\)"):
        TensorProduct("2x1o", "1o", "2x0e", instructions=[(0, 0, 0, "uvu"), (0, 0, 0)])
    with pytest.raises(ValueError, match="instructions is empty"):
        TensorProduct("2x1o", "1o", "2x0e", instructions=[])
    with pytest.raises(TypeError, match="instructions must be a list"):
        TensorProduct("2x1o", "1o", "2x0e", instructions="uvu")


def test_zero_multiplicity_instruction_gives_zero_block():
    tp = TensorProduct("0x0e+2x1o", "1o", "0x1o+2x0e", instructions=[(0, 0, 0, "uvu"), (1, 0, 1, "uvw")]).double()
    assert [p.weight_stop - p.weight_start for p in tp.paths] == [0, 4]
    x1, x2 = torch.randn(3, 6, dtype=F64), torch.randn(3, 3, dtype=F64)
    for w in (torch.randn(4, dtype=F64), torch.randn(3, 4, dtype=F64)):
        torch.testing.assert_close(tp(x1, x2, w), reference(tp, x1, x2, w), atol=REF_TOL, rtol=0)


# ---------------------------------------------------------------------------
# torch.compile (issue 8): one graph, same outputs and gradients as eager
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["uvw", "uvu"])
def test_compiles_to_one_graph(mode):
    torch._dynamo.reset()
    irr = "2x0e+2x1o+1x2e"
    ins = None if mode == "uvw" else _all_allowed(irr, "0e+1o+2e", irr, lambda m1, mo: "uvu" if m1 == mo else None)
    shared = TensorProduct(irr, "0e+1o+2e", irr, instructions=ins).double()
    per = TensorProduct(irr, "0e+1o+2e", irr, instructions=ins, shared_weights=False).double()
    g = torch.Generator().manual_seed(12)
    x1 = torch.randn(7, shared.irreps_in1.dim, dtype=F64, generator=g, requires_grad=True)
    x2 = torch.randn(7, 9, dtype=F64, generator=g)
    w = torch.randn(7, per.weight_numel, dtype=F64, generator=g)
    for tp, args in ((shared, (x1, x2)), (per, (x1, x2, w))):
        # "aot_eager" traces forward and backward into one graph each (fullgraph=True fails on any
        # graph break) without the minutes of C++ code generation of the default backend
        compiled = torch.compile(tp, fullgraph=True, backend="aot_eager")
        y, yc = tp(*args), compiled(*args)
        torch.testing.assert_close(yc, y, atol=1e-14, rtol=0)
        gy = torch.randn_like(y)
        (gx,) = torch.autograd.grad(y, x1, gy)
        (gxc,) = torch.autograd.grad(yc, x1, gy)
        torch.testing.assert_close(gxc, gx, atol=1e-14, rtol=0)
