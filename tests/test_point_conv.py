"""Tests of minequi.point_conv: the TFN point convolution.

E(3) (Haar rotations with reflections, translations) x node-permutation equivariance in
float64, the fused computation against the unfused tensor product + scatter, the edge
vector convention r_ij = pos_j - pos_i, the smooth cutoff, empty graphs, dtypes, bad
inputs, torch.compile, and negative controls showing that each check can fail."""
import math

import pytest
import torch

from minequi import Irreps, PointConv, TensorProduct, radius_graph, scatter_sum, spherical_harmonics
from minequi.clebsch_gordan import clebsch_gordan
from minequi.point_conv import point_convolution, uvu_instructions
from minequi.testing import (assert_equivariant, e3_sampler, equivariance_report, permutation_sampler,
                             product_sampler)

F64 = torch.float64
# Measured: max equivariance error 1.8e-14 (outputs of size ~6) over 16 E(3) x S_N samples;
# difference to the naive formula 2.7e-15 (outputs of size ~6), fused vs unfused below 1e-15.
EQ_TOL = 2e-12
REF_TOL = 1e-13

IN, SH, OUT = "4x0e+4x1o+2x1e+4x2e", "0e+1o+2e", "4x0e+4x1o+2x1e+4x2e+4x2o+2x0o"


def cloud(n=12, seed=0, scale=1.2):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, dtype=F64, generator=g) * scale
    return pos, g


def make_conv(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"num_basis": 6, "cutoff": 2.5, "avg_num_neighbors": 4.0, **kw}
    return PointConv(IN, SH, OUT, **kw).double()


def e3_perm_actions(irreps_in, irreps_out):
    """act_in / act_out of E(3) x S_N on (x, pos, edge_index) and on node outputs."""
    Din, Dout = Irreps(irreps_in), Irreps(irreps_out)

    def act_in(g, inputs):
        (Q, t), perm = g
        x, pos, edge_index = inputs
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm))  # new label of old node n: inv[n]
        return (x @ Din.D_from_matrix(Q).T)[perm], (pos @ Q.T + t)[perm], inv[edge_index]

    def act_out(g, y):
        (Q, _), perm = g
        return (y @ Dout.D_from_matrix(Q).T)[perm]

    return act_in, act_out


def test_equivariant_e3_and_permutations():
    conv = make_conv()
    pos, g = cloud()
    edge_index = radius_graph(pos, 2.5)
    assert 20 < edge_index.shape[1] < 12 * 11  # a real graph, not complete
    x = torch.randn(12, conv.irreps_in.dim, dtype=F64, generator=g)
    act_in, act_out = e3_perm_actions(conv.irreps_in, conv.irreps_out)
    report = assert_equivariant(conv, (x, pos, edge_index), product_sampler(e3_sampler(), permutation_sampler(12)),
                                act_in, act_out, n_samples=16, atol=EQ_TOL)
    print("PointConv E(3) x S_N:", report)
    assert report.scale > 1.0  # the outputs are not trivially small


def test_negative_controls_each_symmetry_can_fail():
    conv = make_conv()
    pos, g = cloud()
    edge_index = radius_graph(pos, 2.5)
    x = torch.randn(12, conv.irreps_in.dim, dtype=F64, generator=g)
    sample = product_sampler(e3_sampler(), permutation_sampler(12))
    act_in, act_out = e3_perm_actions(conv.irreps_in, conv.irreps_out)
    # 1. wrong parity bookkeeping (claim the 2o outputs are 2e): only reflections expose it
    wrong = Irreps(str(conv.irreps_out).replace("4x2o", "4x2e"))
    _, act_wrong = e3_perm_actions(conv.irreps_in, wrong)
    err = equivariance_report(conv, (x, pos, edge_index), sample, act_in, act_wrong, n_samples=16).max_error
    assert err > 1e-2, err

    # 2. absolute positions (pos_j) instead of relative ones (pos_j - pos_i): rotation- and
    #    reflection-equivariant, but translations expose it
    def absolute(x, pos, edge_index):
        vec = pos[edge_index[0]]  # [E, 3]  (wrong: should be pos_j - pos_i)
        r = vec.norm(dim=1)
        w = conv.radial(conv.basis(r) * conv.envelope(r)[:, None] * conv.basis_scale)
        sh = spherical_harmonics(conv.irreps_sh.ls, vec)
        return point_convolution(conv.tp, x, sh, w, edge_index, x.shape[0])

    no_shift = product_sampler(e3_sampler(scale=0.0), permutation_sampler(12))
    assert equivariance_report(absolute, (x, pos, edge_index), no_shift, act_in, act_out).max_error < EQ_TOL
    assert equivariance_report(absolute, (x, pos, edge_index), sample, act_in, act_out).max_error > 1e-2

    # 3. node-order dependence: permutations expose it
    class Ordered(PointConv):
        def forward(self, x, pos, edge_index):
            y = super().forward(x, pos, edge_index)
            return y * torch.arange(1, y.shape[0] + 1, dtype=y.dtype)[:, None]

    torch.manual_seed(0)
    ordered = Ordered(IN, SH, OUT, num_basis=6, cutoff=2.5, avg_num_neighbors=4.0).double()
    assert equivariance_report(ordered, (x, pos, edge_index), sample, act_in, act_out).max_error > 1e-2


def naive_point_conv(conv, x, pos, edge_index):
    """The formula of the module docstring, edge by edge and path by path."""
    out = torch.zeros(pos.shape[0], conv.irreps_out.dim, dtype=F64)
    in_sl, sh_sl, out_sl = conv.irreps_in.slices(), conv.irreps_sh.slices(), conv.irreps_out.slices()
    for j, i in edge_index.T.tolist():
        r = pos[j] - pos[i]  # r_ij = pos_j - pos_i, message j -> i
        Y = spherical_harmonics(conv.irreps_sh.ls, r[None])[0]
        d = r.norm()
        R = conv.radial(conv.basis(d[None]) * conv.envelope(d[None])[:, None] * conv.basis_scale)[0]
        for p in conv.tp.paths:
            C = clebsch_gordan(p.l1, p.l2, p.l3)
            xu = x[j, in_sl[p.i_in1]].reshape(p.mul_in1, 2 * p.l1 + 1)
            Yv = Y[sh_sl[p.i_in2]]
            w = R[p.weight_start:p.weight_stop]  # [U] (mul_in2 = 1)
            z = torch.einsum("ua,b,abk->uk", xu, Yv, C) * (p.alpha * w[:, None])
            out[i, out_sl[p.i_out]] += z.reshape(-1)
    return out / math.sqrt(conv.avg_num_neighbors)


def test_matches_naive_formula_and_edge_convention():
    conv = make_conv()
    pos, g = cloud(8, seed=1)
    edge_index = radius_graph(pos, 2.5)
    x = torch.randn(8, conv.irreps_in.dim, dtype=F64, generator=g)
    y = conv(x, pos, edge_index)
    torch.testing.assert_close(y, naive_point_conv(conv, x, pos, edge_index), atol=REF_TOL, rtol=0)
    # negative control: the opposite edge vector (pos_i - pos_j) changes every odd-l filter
    flipped = naive_point_conv(conv, x, -pos, edge_index)
    assert (y - flipped).abs().max() > 1e-2


def test_single_edge_direction():
    # one scalar at node 0, one edge 0 -> 1: node 1 receives a vector along pos_0 - pos_1
    torch.manual_seed(3)
    conv = PointConv("1x0e", "1o", "1x1o", num_basis=4, cutoff=3.0).double()
    pos = torch.tensor([[0.3, -1.0, 0.5], [0.0, 0.0, 0.0]], dtype=F64)
    y = conv(torch.tensor([[1.0], [0.0]], dtype=F64), pos, torch.tensor([[0], [1]]))
    assert torch.equal(y[0], torch.zeros(3, dtype=F64))  # node 0 receives nothing
    r = pos[0] - pos[1]
    cos = (y[1] @ r) / (y[1].norm() * r.norm())
    assert abs(abs(float(cos.detach())) - 1) < 1e-14 and float(y[1].detach().norm()) > 1e-3


def test_fused_equals_unfused_tensor_product_and_scatter():
    conv = make_conv()
    pos, g = cloud(10, seed=2)
    edge_index = radius_graph(pos, 2.5)
    x = torch.randn(10, conv.irreps_in.dim, dtype=F64, generator=g)
    src, dst = edge_index
    vec = pos[src] - pos[dst]
    r = vec.norm(dim=1)
    sh = spherical_harmonics(conv.irreps_sh.ls, vec)
    w = conv.radial(conv.basis(r) * conv.envelope(r)[:, None] * conv.basis_scale)
    fused = point_convolution(conv.tp, x, sh, w, edge_index, 10)
    unfused = scatter_sum(conv.tp(x[src], sh, w), dst, 10)
    torch.testing.assert_close(fused, unfused, atol=REF_TOL, rtol=0)
    torch.testing.assert_close(conv(x, pos, edge_index), unfused / 2.0, atol=REF_TOL, rtol=0)  # sqrt(4) = 2


def test_fused_with_several_harmonic_copies_and_gradients():
    # mul2 > 1 (and l1 = 0 / l2 = 0 pairs) take the general branch of point_convolution
    i1, i2, io = "2x0e+1x1o+1x2e", "2x0e+2x1o", "2x0e+1x0e+2x1o+1x1o+1x1e+1x2e"
    tp = TensorProduct(i1, i2, io, instructions=uvu_instructions(i1, i2, io), shared_weights=False).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, tp.irreps_in1.dim, dtype=F64, generator=g, requires_grad=True)
    sh = torch.randn(4, tp.irreps_in2.dim, dtype=F64, generator=g, requires_grad=True)
    w = torch.randn(4, tp.weight_numel, dtype=F64, generator=g, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 2, 2], [1, 0, 0, 1]])
    fused = point_convolution(tp, x, sh, w, edge_index, 3)
    unfused = scatter_sum(tp(x[edge_index[0]], sh, w), edge_index[1], 3)
    torch.testing.assert_close(fused, unfused, atol=REF_TOL, rtol=0)
    assert torch.autograd.gradcheck(lambda a, b, c: point_convolution(tp, a, b, c, edge_index, 3), (x, sh, w))
    with pytest.raises(ValueError, match="all 'uvu'"):
        point_convolution(TensorProduct("1o", "1o", "0e", shared_weights=False), x[:, :1], sh, w, edge_index, 5)


def test_gradients_positions_and_double_backward():
    torch.manual_seed(5)
    conv = PointConv("2x0e+1x1o+1x2e", SH, "2x0e+1x1o+1x1e+1x2e", num_basis=4, cutoff=2.5).double()
    pos, g = cloud(4, seed=5)
    edge_index = radius_graph(pos, 2.5)
    x = torch.randn(4, conv.irreps_in.dim, dtype=F64, generator=g)
    pos = pos.requires_grad_(True)
    x = x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, p: conv(x, p, edge_index), (x, pos))
    # forces (the gradient of an invariant) can themselves be differentiated (training on forces)
    energy = lambda p: conv(x, p, edge_index)[:, :2].sum()  # noqa: E731  the 0e outputs
    assert torch.autograd.gradgradcheck(energy, (pos,))


def test_cutoff_is_smooth_and_exact():
    torch.manual_seed(6)
    conv = PointConv("2x0e", "0e+1o", "2x0e+2x1o", num_basis=4, cutoff=2.0).double()
    x = torch.ones(2, 2, dtype=F64)
    edge_index = torch.tensor([[1], [0]])

    def at(d):
        pos = torch.tensor([[0.0, 0, 0], [d, 0, 0]], dtype=F64)
        with torch.no_grad():
            return conv(x, pos, edge_index)[0]

    assert torch.equal(at(2.0), torch.zeros(8, dtype=F64))  # exactly zero at and beyond the cutoff
    assert torch.equal(at(3.0), torch.zeros(8, dtype=F64))
    assert at(1.0).abs().max() > 1e-3
    # the message vanishes to fourth order as the neighbour reaches the cutoff: the envelope
    # to third order (u = u' = u'' = 0) times the Bessel functions sin(n pi r / c) to first order
    a, b = at(2.0 - 1e-2).abs().max(), at(2.0 - 2e-2).abs().max()
    assert a < 1e-6 and 14 < float(b / a) < 18, (float(a), float(b))  # (2 h)^4 / h^4 = 16


def test_empty_graphs():
    conv = make_conv()
    x = torch.randn(5, conv.irreps_in.dim, dtype=F64, requires_grad=True)
    pos = torch.randn(5, 3, dtype=F64)
    y = conv(x, pos, torch.zeros(2, 0, dtype=torch.long))  # no edges
    assert y.shape == (5, conv.irreps_out.dim) and torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    y = conv(torch.zeros(0, conv.irreps_in.dim, dtype=F64), torch.zeros(0, 3, dtype=F64),
             torch.zeros(2, 0, dtype=torch.long))  # no nodes
    assert y.shape == (0, conv.irreps_out.dim)
    # self-loops (r = 0) and coincident atoms give finite values and gradients
    pos = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]], dtype=F64, requires_grad=True)
    y = conv(torch.randn(3, conv.irreps_in.dim, dtype=F64), pos, torch.tensor([[0, 1, 0, 2], [0, 0, 1, 1]]))
    y.pow(2).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(pos.grad).all()


def test_float32_and_float64():
    torch.manual_seed(7)
    conv = PointConv(IN, SH, OUT, num_basis=6, cutoff=2.5)  # float32 parameters
    pos, g = cloud(8, seed=8)
    edge_index = radius_graph(pos, 2.5)
    x = torch.randn(8, conv.irreps_in.dim, dtype=F64, generator=g)
    y32 = conv(x.float(), pos.float(), edge_index)
    assert y32.dtype == torch.float32
    y64 = conv.double()(x, pos, edge_index)
    assert y64.dtype == F64
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(conv(x, pos, edge_index.int()), y64, atol=0, rtol=0)  # int32 indices
    # the library's rule: parameters and inputs must share a dtype
    with pytest.raises(TypeError, match="x is torch.float32 on cpu, pos is torch.float64 on cpu and the parameters"):
        conv(x.float(), pos, edge_index)
    with pytest.raises(TypeError, match="a module's parameters must match its input"):
        conv.float()(x, pos, edge_index)


def test_bad_inputs():
    conv = make_conv()
    x, pos = torch.randn(4, conv.irreps_in.dim, dtype=F64), torch.randn(4, 3, dtype=F64)
    ok = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"edge_index has entries in \[0, 4\] but must lie in \[0, num_nodes\) = \[0, 4\)"):
        conv(x, pos, torch.tensor([[0, 4], [1, 0]]))
    with pytest.raises(ValueError, match="edge_index has entries in"):
        conv(x, pos, torch.tensor([[0, -1], [1, 0]]))
    with pytest.raises(TypeError, match="edge_index must be an integer tensor"):
        conv(x, pos, ok.double())
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, E\], got \[3, 2\]"):
        conv(x, pos, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\], got \[4, 2\]"):
        conv(x, pos[:, :2], ok)
    with pytest.raises(ValueError, match=rf"x must have shape \[\.\.\., {conv.irreps_in.dim}\]"):
        conv(x[:, :-1], pos, ok)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 42\] with N = pos.shape\[0\] = 4, got \(3, 42\)"):
        conv(x[:3], pos, ok)
    with pytest.raises(TypeError, match="pos must be a floating-point tensor"):
        conv(x, pos.long(), ok)
    with pytest.raises(ValueError, match="irreps_sh must hold each degree once"):
        PointConv("2x0e", "0e+1e", "2x0e")
    with pytest.raises(ValueError, match="irreps_sh must hold each degree once"):
        PointConv("2x0e", "2x1o", "2x1o")
    with pytest.raises(ValueError, match=r"irreps_out entries 3x1o are reached by no 'uvu' path"):
        PointConv("2x0e", "0e+1o", "2x0e+3x1o")
    with pytest.raises(ValueError, match=r"irreps_out entries 2x1e are reached by no 'uvu' path"):
        PointConv("2x0e", "0e+1o", "2x1e")
    with pytest.raises(ValueError, match="avg_num_neighbors must be a positive number"):
        PointConv("2x0e", "0e", "2x0e", avg_num_neighbors=0)


def test_compiles_to_one_graph():
    torch._dynamo.reset()
    conv = make_conv()
    pos, g = cloud(10, seed=9)
    edge_index = radius_graph(pos, 2.5)
    x = torch.randn(10, conv.irreps_in.dim, dtype=F64, generator=g)
    pos = pos.requires_grad_(True)
    # "aot_eager" traces forward and backward into one graph each; fullgraph=True fails on any
    # graph break (the edge_index range check is skipped while compiling)
    compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
    y, yc = conv(x, pos, edge_index), compiled(x, pos, edge_index)
    torch.testing.assert_close(yc, y, atol=1e-13, rtol=0)
    gy = torch.randn_like(y)
    (gp,) = torch.autograd.grad(y, pos, gy)
    (gpc,) = torch.autograd.grad(yc, pos, gy)
    torch.testing.assert_close(gpc, gp, atol=1e-13, rtol=0)


def test_edge_vec_argument_replaces_pos_differences_and_is_checked():
    # edge_vec = pos[j] - pos[i] gives exactly the default; a periodic image (shifted source)
    # changes the output (so the argument is used), and a wrong shape is refused by name
    torch.manual_seed(0)
    conv = PointConv("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", cutoff=3.0).double()
    pos = torch.randn(10, 3, dtype=torch.float64)
    x = torch.randn(10, 16, dtype=torch.float64)
    ei = radius_graph(pos, 3.0)
    vec = pos[ei[0]] - pos[ei[1]]
    assert torch.equal(conv(x, pos, ei), conv(x, pos, ei, edge_vec=vec))
    shifted = vec + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    assert (conv(x, pos, ei) - conv(x, pos, ei, edge_vec=shifted)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="edge_vec must be a \\[E, 3\\]"):
        conv(x, pos, ei, edge_vec=vec[:3])
