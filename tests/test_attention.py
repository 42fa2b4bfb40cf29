"""Tests of minequi.graph.scatter_softmax and minequi.attention (EquivariantAttention, SE3Transformer):
stability of the scatter softmax, E(3) x S_N equivariance (float64, reflections included) with
negative controls, invariant attention weights that sum to 1, agreement with a dense N x N
reference, continuity across the cutoff, gradcheck, bad inputs, empty graphs, torch.compile."""
import math

import pytest
import torch

from minequi import EquivariantAttention, Irreps, SE3Transformer, radius_graph
from minequi.graph import scatter_softmax
from minequi.testing import (assert_equivariant, e3_sampler, equivariance_report, haar_o3, permutation_sampler,
                             product_sampler, rand_rotation)

F64 = torch.float64
# Measured (8 E(3) x S_N samples): EquivariantAttention 9.5e-15 (outputs of size ~2.5), its
# weights 4.4e-15; SE3Transformer 3.4e-15 per node and 4.5e-15 pooled.  Tolerance ~100x.
EQ_TOL = 1e-12

IN, KEY, OUT = "4x0e+4x1o+4x1e", "4x0e+4x1o+2x1e", "2x0e+2x0o+2x1o+2x2e"
VALUE = "4x0e+4x0o+4x1o+4x1e+4x2e"


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------
# scatter_softmax
# ----------------------------------------------------------------------------
def test_scatter_softmax_matches_softmax_per_target_and_sums_to_one():
    src = torch.randn(9, 3, dtype=F64, generator=gen(0))
    index = torch.tensor([2, 0, 2, 2, 4, 0, 4, 4, 4])
    out = scatter_softmax(src, index, dim_size=5)
    for n in range(5):
        rows = index == n
        if rows.any():
            torch.testing.assert_close(out[rows], torch.softmax(src[rows], dim=0), atol=1e-15, rtol=0)
    sums = torch.zeros(5, 3, dtype=F64).index_add(0, index, out)
    torch.testing.assert_close(sums[[0, 2, 4]], torch.ones(3, 3, dtype=F64), atol=1e-15, rtol=0)
    assert torch.equal(sums[[1, 3]], torch.zeros(2, 3, dtype=F64))  # targets without edges: nothing


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_scatter_softmax_huge_logits_are_stable(dtype):
    src = torch.tensor([1e4, 1e4 - 1.0, -1e4, 3.0, 1e4], dtype=dtype)
    index = torch.tensor([0, 0, 0, 1, 1])
    out = scatter_softmax(src, index, dim_size=2)
    assert torch.isfinite(out).all()
    expected = torch.tensor([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1)), 0.0, 0.0, 1.0], dtype=dtype)
    torch.testing.assert_close(out, expected)
    # negative control: the naive formula overflows
    naive = src.exp() / torch.zeros(2, dtype=dtype).index_add(0, index, src.exp())[index]
    assert not torch.isfinite(naive).all()


def test_scatter_softmax_all_minus_inf_empty_and_gradient():
    out = scatter_softmax(torch.tensor([-math.inf, -math.inf, 0.5]), torch.tensor([0, 0, 1]), dim_size=2)
    assert torch.equal(out, torch.tensor([0.0, 0.0, 1.0]))
    empty = scatter_softmax(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), dim_size=3)
    assert empty.shape == (0, 4)
    src = torch.randn(7, 2, dtype=F64, generator=gen(1), requires_grad=True)
    index = torch.tensor([0, 1, 0, 2, 1, 1, 0])
    assert torch.autograd.gradcheck(lambda s: scatter_softmax(s, index, 3), (src,))


def test_scatter_softmax_bad_inputs():
    with pytest.raises(ValueError, match=r"index must have shape \[E\] = \[3\]"):
        scatter_softmax(torch.zeros(3), torch.tensor([0, 1]), 2)
    with pytest.raises(TypeError, match="index must be an integer tensor"):
        scatter_softmax(torch.zeros(3), torch.zeros(3), 2)
    with pytest.raises(TypeError, match="src must be a floating-point tensor"):
        scatter_softmax(torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 1]), 2)
    with pytest.raises(TypeError, match="dim_size"):
        scatter_softmax(torch.zeros(3), torch.tensor([0, 1, 1]), -1)


# ----------------------------------------------------------------------------
# EquivariantAttention
# ----------------------------------------------------------------------------
def layer(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"num_heads": 2, "irreps_sh": "0e+1o+2e", "num_basis": 6, "cutoff": 2.5, "irreps_value": VALUE, **kw}
    return EquivariantAttention(IN, OUT, KEY, **kw).double()


def cloud(n=12, seed=0, irreps=IN, cutoff=2.5):
    g = gen(seed)
    pos = torch.randn(n, 3, dtype=F64, generator=g)
    x = torch.randn(n, Irreps(irreps).dim, dtype=F64, generator=g)
    return x, pos, radius_graph(pos, cutoff)


def actions(irreps_in, irreps_out, edges_out=False):
    Din, Dout = Irreps(irreps_in), Irreps(irreps_out)

    def act_in(g, inputs):
        (Q, t), perm = g
        x, pos, edge_index = inputs
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm))
        return (x @ Din.D_from_matrix(Q).T)[perm], (pos @ Q.T + t)[perm], inv[edge_index]

    def act_out(g, y):
        (Q, _), perm = g
        if edges_out:  # per-edge invariants: the edges keep their order
            return y
        return (y @ Dout.D_from_matrix(Q).T)[perm]

    return act_in, act_out


def test_attention_equivariant_e3_and_permutations():
    att = layer()
    x, pos, edge_index = cloud()
    assert edge_index.shape[1] > 40
    sample = product_sampler(e3_sampler(), permutation_sampler(12))
    report = assert_equivariant(att, (x, pos, edge_index), sample, *actions(IN, OUT), n_samples=8, atol=EQ_TOL)
    print("EquivariantAttention E(3) x S_N:", report)
    assert report.scale > 1e-2
    weights = assert_equivariant(att.attention_weights, (x, pos, edge_index), sample,
                                 *actions(IN, OUT, edges_out=True), n_samples=8, atol=EQ_TOL)
    print("attention weights E(3) x S_N:", weights)
    # the weights are not trivial (uniform): they depend on the features
    a = att.attention_weights(x, pos, edge_index)
    assert (a - att.attention_weights(x.flip(0), pos, edge_index)).abs().max() > 1e-2


def test_negative_controls():
    att = layer()
    x, pos, edge_index = cloud()
    sample = product_sampler(e3_sampler(), permutation_sampler(12))
    act_in, act_out = actions(IN, OUT)
    # 1. a layer fed absolute positions instead of r_ij (edge_vec = pos_j) is not translation-equivariant
    broken = lambda x, p, e: att(x, p, e, edge_vec=p[e[0]])  # noqa: E731
    assert equivariance_report(broken, (x, pos, edge_index), sample, act_in, act_out, n_samples=2).max_error > 1e-3
    # 2. the right layer checked against the wrong output parity (0o taken as 0e) fails under reflections
    _, act_wrong = actions(IN, "2x0e+2x0e+2x1o+2x2e")
    assert equivariance_report(att, (x, pos, edge_index), sample, act_in, act_wrong, n_samples=4).max_error > 1e-3
    # 3. a logit pairing blocks of different irreps (a 1o query with a 1e key) is a pseudoscalar:
    #    its softmax is invariant under rotations but not under reflections
    sl = Irreps(IN).slices()
    q1o, k1e = sl[1], sl[2]

    def bad_weights(x, pos, edge_index):
        src, dst = edge_index
        q = x[dst][:, q1o].reshape(-1, 4, 3)[:, :2]  # [E, 2, 3]  1o
        k = x[src][:, k1e].reshape(-1, 4, 3)[:, :2]  # [E, 2, 3]  1e
        return scatter_softmax((q * k).sum((1, 2)), dst, x.shape[0])  # [E]

    act_e = actions(IN, OUT, edges_out=True)
    so3 = product_sampler(lambda g, d: (rand_rotation(generator=g, dtype=d), torch.zeros(3, dtype=d)),
                          permutation_sampler(12))
    assert equivariance_report(bad_weights, (x, pos, edge_index), so3, *act_e, n_samples=4).max_error < EQ_TOL
    assert equivariance_report(bad_weights, (x, pos, edge_index), sample, *act_e, n_samples=4).max_error > 1e-3


def dense_reference(att, x, pos, edge_index):
    """Dense N x N masked softmax, heads by explicit slicing, unfused tensor products."""
    N, H = pos.shape[0], att.num_heads
    A = torch.zeros(N, N, dtype=torch.bool)  # A[i, j]: edge j -> i
    A[edge_index[1], edge_index[0]] = True
    h = att.lin_in(x)
    dk = att.irreps_key.dim
    q, xk, xv = h[:, :dk], h[:, dk:2 * dk], h[:, 2 * dk:]
    rel = pos[None, :, :] - pos[:, None, :]  # [N, N, 3]  rel[i, j] = pos_j - pos_i
    ii, jj = torch.nonzero(A, as_tuple=True)
    sh, wk = att.key_conv.edge_embedding(rel[ii, jj])
    _, wv = att.value_conv.edge_embedding(rel[ii, jj])
    K = torch.zeros(N, N, dk, dtype=x.dtype)
    K[ii, jj] = att.key_conv.tp(xk[jj], sh, wk)
    V = torch.zeros(N, N, att.irreps_value.dim, dtype=x.dtype)
    V[ii, jj] = att.value_conv.tp(xv[jj], sh, wv)
    u = att.key_conv.envelope(rel.norm(dim=-1)) if att.smooth_cutoff else torch.ones(N, N, dtype=x.dtype)
    out = torch.zeros(N, att.irreps_value.dim, dtype=x.dtype)
    for hd in range(H):
        logits = torch.zeros(N, N, dtype=x.dtype)
        for (mul, ir), s in zip(att.irreps_key, att.irreps_key.slices()):
            c = slice(hd * mul // H, (hd + 1) * mul // H)
            qb = q[:, s].reshape(N, mul, ir.dim)[:, c]  # [N, mul/H, d]
            kb = K[:, :, s].reshape(N, N, mul, ir.dim)[:, :, c]  # [N, N, mul/H, d]
            logits = logits + torch.einsum("iud,ijud->ij", qb, kb)
        logits = logits / math.sqrt(dk / H)
        w = torch.softmax(logits.masked_fill(~A, -math.inf), dim=1).nan_to_num(0.0) * u * A
        w = w / w.sum(1, keepdim=True).clamp_min(1e-300)
        for (mul, ir), s in zip(att.irreps_value, att.irreps_value.slices()):
            c = slice(hd * mul // H, (hd + 1) * mul // H)
            vb = V[:, :, s].reshape(N, N, mul, ir.dim)[:, :, c]
            o = out[:, s].reshape(N, mul, ir.dim).clone()
            o[:, c] = torch.einsum("ij,ijud->iud", w, vb)
            out[:, s] = o.reshape(N, -1)
    return att.lin_out(out)


@pytest.mark.parametrize("smooth", [True, False])
def test_equals_dense_reference(smooth):
    att = layer(seed=3, smooth_cutoff=smooth)
    x, pos, edge_index = cloud(n=9, seed=4)
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=gen(5))]  # any edge order
    y = att(x, pos, edge_index)
    # measured: 1.3e-15 (smooth) and 4.4e-16 (plain), outputs of size ~2
    torch.testing.assert_close(y, dense_reference(att, x, pos, edge_index), atol=1e-13, rtol=0)
    # negative control: with one head the layer is a different function
    one = layer(seed=3, smooth_cutoff=smooth, num_heads=1)
    assert (one(x, pos, edge_index) - y).abs().max() > 1e-3


def test_weights_sum_to_one_per_target_and_head():
    att = layer()
    x, pos, edge_index = cloud()
    a = att.attention_weights(x, pos, edge_index)
    sums = torch.zeros(12, 2, dtype=F64).index_add(0, edge_index[1], a)
    has = torch.zeros(12, dtype=torch.bool)
    has[edge_index[1]] = True
    torch.testing.assert_close(sums[has], torch.ones(int(has.sum()), 2, dtype=F64), atol=1e-14, rtol=0)
    assert (a >= 0).all()


def node0(r, smooth, with_far_edge=True):
    """Node 0 has neighbours 1 (at distance 1) and 2 (at distance r); the far edge dropped when asked."""
    att = layer(seed=5, smooth_cutoff=smooth)
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, r, 0]], dtype=F64)
    x = torch.randn(3, Irreps(IN).dim, dtype=F64, generator=gen(6))
    edge_index = torch.tensor([[1, 2], [0, 0]]) if with_far_edge else torch.tensor([[1], [0]])
    return att(x, pos, edge_index)[0]


def test_continuous_across_the_cutoff():
    # neighbour 2 just inside the cutoff, then just outside (a radius graph drops its edge)
    c, eps = 2.5, 1e-6
    smooth = (node0(c - eps, True) - node0(c + eps, True, with_far_edge=False)).abs().max()
    assert smooth < 1e-12
    # negative control: the plain softmax jumps (the far edge takes a finite weight until it is dropped)
    jump = (node0(c - eps, False) - node0(c + eps, False, with_far_edge=False)).abs().max()
    assert jump > 1e-2
    print(f"jump across the cutoff: smooth {float(smooth.detach()):.1e}, plain softmax {float(jump.detach()):.2e}")


def test_gradcheck():
    torch.manual_seed(0)
    att = EquivariantAttention("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o", 2, "0e+1o", num_basis=3, cutoff=2.0,
                               radial_hidden=4).double()
    pos = torch.randn(4, 3, dtype=F64, generator=gen(1), requires_grad=True)
    x = torch.randn(4, 8, dtype=F64, generator=gen(2), requires_grad=True)
    edge_index = torch.tensor([[1, 2, 3, 0, 2], [0, 0, 0, 1, 3]])
    with torch.no_grad():
        pos[1:] = pos[0] + 0.5 * torch.nn.functional.normalize(pos[1:] - pos[0], dim=1)  # all inside the cutoff
    assert torch.autograd.gradcheck(lambda x, p: att(x, p, edge_index), (x, pos))


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_heads=3 must divide every multiplicity of irreps_key"):
        layer(num_heads=3, irreps_value="3x0e+3x0o+3x1o+3x2e")
    with pytest.raises(ValueError, match="num_heads=2 must divide every multiplicity of irreps_value"):
        layer(irreps_value="4x0e+4x0o+3x1o+4x2e")
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        layer(num_heads=0)
    with pytest.raises(ValueError, match="irreps_key=2x0e\\+2x1e has 1e, which does not occur in irreps_in"):
        EquivariantAttention("2x0e+2x1o", "2x0e", "2x0e+2x1e", 2, "0e+1o")
    with pytest.raises(ValueError, match="irreps_out=.* has 0o, 2e, which does not occur in irreps_value"):
        layer(irreps_value="4x0e+4x1o")
    with pytest.raises(ValueError, match="entries 2x1o would always be zero"):
        EquivariantAttention("4x0e", "4x0e+2x1o", "4x0e", 2, "0e+1o", irreps_value="4x0e+2x1o")
    att = layer()
    x, pos, edge_index = cloud()
    with pytest.raises(ValueError, match=r"x must have shape \[N, 28\]"):
        att(x[:5], pos, edge_index)
    with pytest.raises(ValueError, match="edge_index has entries"):
        att(x, pos, edge_index + 12)
    with pytest.raises(TypeError, match="parameters are torch.float64"):
        att(x.float(), pos.float(), edge_index)
    with pytest.raises(ValueError, match=r"edge_vec must be a \[E, 3\]"):
        att(x, pos, edge_index, edge_vec=pos)


def test_empty_graphs():
    att = layer()
    x, pos, _ = cloud()
    y = att(x, pos, torch.zeros(2, 0, dtype=torch.long))
    assert torch.equal(y, torch.zeros(12, att.irreps_out.dim, dtype=F64))
    assert att(x[:0], pos[:0], torch.zeros(2, 0, dtype=torch.long)).shape == (0, att.irreps_out.dim)


def test_float32():
    att = layer().float()
    x, pos, edge_index = cloud()
    y = att(x.float(), pos.float(), edge_index)
    assert y.dtype == torch.float32
    # measured: 1.7e-6 (outputs of size ~2.6)
    torch.testing.assert_close(y.double(), layer()(x, pos, edge_index), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------
# SE3Transformer
# ----------------------------------------------------------------------------
HIDDEN = "2x0e+2x0o+2x1o+2x1e+2x2e"


def model(irreps_out="1x0e+1x0o+1x1o", **kw):
    torch.manual_seed(0)
    kw = {"num_layers": 3, "num_heads": 2, "cutoff": 2.5, "num_basis": 6, **kw}
    return SE3Transformer("2x0e+1x1o", HIDDEN, irreps_out, **kw).double()


def two_clouds(seed=0):
    g = gen(seed)
    pos = torch.cat([torch.randn(7, 3, dtype=F64, generator=g), torch.randn(5, 3, dtype=F64, generator=g) + 0.3])
    batch = torch.tensor([0] * 7 + [1] * 5)
    x = torch.randn(12, Irreps("2x0e+1x1o").dim, dtype=F64, generator=g)
    return x, pos, radius_graph(pos, 2.5, batch=batch), batch


@pytest.mark.parametrize("pooled", [False, True])
def test_se3_transformer_equivariant(pooled):
    net = model()
    # keys: the irreps each block's input has (0o appears after two blocks: 1e x 1o)
    assert [str(a.irreps_key) for a in net.attentions] == ["2x0e+2x1o", "2x0e+2x1o+2x1e+2x2e", HIDDEN]
    x, pos, edge_index, batch = two_clouds()
    act_in3, act_out3 = actions("2x0e+1x1o", net.irreps_out)

    def act_in(g, inputs):
        (Q, t), perm = g
        *rest, b = inputs
        return (*act_in3(g, tuple(rest)), b[perm])

    def act_out(g, y):
        (Q, _), _ = g
        return y @ net.irreps_out.D_from_matrix(Q).T if pooled else act_out3(g, y)

    f = (lambda x, p, e, b: net(x, p, e, b, num_graphs=2)) if pooled else (lambda x, p, e, b: net(x, p, e))
    report = assert_equivariant(f, (x, pos, edge_index, batch), product_sampler(e3_sampler(), permutation_sampler(12)),
                                act_in, act_out, n_samples=4, atol=EQ_TOL)
    print(f"SE3Transformer E(3) x S_N ({'pooled' if pooled else 'per node'}):", report)
    assert report.scale > 1e-2
    # the 0o output is not zero, and it flips under a reflection (checked above): the model sees chirality
    assert f(x, pos, edge_index, batch)[..., 1].abs().max() > 1e-3


def test_se3_transformer_pooling_and_errors():
    net = model()
    x, pos, edge_index, batch = two_clouds()
    nodes = net(x, pos, edge_index)
    torch.testing.assert_close(net(x, pos, edge_index, batch), torch.stack([nodes[:7].sum(0), nodes[7:].sum(0)]),
                               atol=1e-13, rtol=0)
    net.reduce = "mean"
    torch.testing.assert_close(net(x, pos, edge_index, batch, num_graphs=2),
                               torch.stack([nodes[:7].mean(0), nodes[7:].mean(0)]), atol=1e-13, rtol=0)
    with pytest.raises(ValueError, match="irreps_out=1x2o cannot be produced"):
        model("1x2o")
    with pytest.raises(ValueError, match="reduce must be"):
        model(reduce="max")
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        model(num_heads=3)
    with pytest.raises(ValueError, match="batch must have shape"):
        net(x, pos, edge_index, batch[:3])


def test_compile_matches_eager():
    torch.manual_seed(0)  # one block (Dynamo's tracing time grows with the number of layers)
    net = SE3Transformer("2x0e+1x1o", "2x0e+2x1o", "1x0e+1x1o", num_layers=1, num_heads=2, cutoff=2.5,
                         num_basis=4, lmax=1).double()
    x, pos, edge_index, batch = two_clouds()
    f = lambda x, p, e, b: net(x, p, e, b, num_graphs=2)  # noqa: E731
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    xg, pg = x.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    y = f(xg, pg, edge_index, batch)
    gx, gp = torch.autograd.grad(y.square().sum(), (xg, pg))
    xc, pc = x.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    yc = compiled(xc, pc, edge_index, batch)
    gxc, gpc = torch.autograd.grad(yc.square().sum(), (xc, pc))
    torch.testing.assert_close(yc, y, atol=1e-13, rtol=0)
    torch.testing.assert_close(gxc, gx, atol=1e-12, rtol=0)
    torch.testing.assert_close(gpc, gp, atol=1e-12, rtol=0)
