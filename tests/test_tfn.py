"""Tests of minequi.tfn.TensorFieldNetwork: E(3) x S_N equivariance of node outputs and
invariance of pooled outputs (float64, reflections included), parity made explicit (0o
flips sign under reflections, 0e does not; which models can tell a chiral shape from its
mirror image), pooling, empty graphs, bad inputs, torch.compile, negative controls."""
import pytest
import torch

from minequi import Irreps, TensorFieldNetwork, radius_graph
from minequi.testing import (assert_equivariant, e3_sampler, equivariance_report, permutation_sampler,
                             product_sampler, rand_rotation)

F64 = torch.float64
# Measured: max equivariance error 6.6e-15 (node outputs) and 1.1e-14 (pooled; outputs of
# size ~2) over 16 E(3) x S_N samples.
EQ_TOL = 1e-12

HIDDEN = "8x0e+4x0o+4x1o+4x1e+2x2e+2x2o"
NATURAL = "8x0e+4x1o+2x2e"  # parity (-1)^l only

# The chiral pair of 3D Tetris (Thomas et al. 2018): mirror images, not rotations of each other.
CHIRAL = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0]], dtype=F64)
MIRROR = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, -1, 0]], dtype=F64)


def model(irreps_out="1x0e+1x0o+1x1o", hidden=HIDDEN, seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"num_layers": 3, "cutoff": 2.5, "num_basis": 6, "avg_num_neighbors": 4.0, **kw}
    return TensorFieldNetwork("2x0e+1x1o", hidden, irreps_out, **kw).double()


def two_clouds(seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.cat([torch.randn(7, 3, dtype=F64, generator=g), torch.randn(5, 3, dtype=F64, generator=g) + 0.3])
    batch = torch.tensor([0] * 7 + [1] * 5)
    edge_index = radius_graph(pos, 2.5, batch=batch)
    x = torch.randn(12, Irreps("2x0e+1x1o").dim, dtype=F64, generator=g)
    return x, pos, edge_index, batch


def actions(irreps_out, pooled):
    Din, Dout = Irreps("2x0e+1x1o"), Irreps(irreps_out)

    def act_in(g, inputs):
        (Q, t), perm = g
        x, pos, edge_index, batch = inputs
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm))
        return (x @ Din.D_from_matrix(Q).T)[perm], (pos @ Q.T + t)[perm], inv[edge_index], batch[perm]

    def act_out(g, y):
        (Q, _), perm = g
        y = y @ Dout.D_from_matrix(Q).T
        return y if pooled else y[perm]

    return act_in, act_out


@pytest.mark.parametrize("pooled", [False, True])
def test_equivariant_e3_and_permutations(pooled):
    tfn = model()
    x, pos, edge_index, batch = two_clouds()
    f = (lambda x, p, e, b: tfn(x, p, e, b, num_graphs=2)) if pooled else (lambda x, p, e, b: tfn(x, p, e))
    act_in, act_out = actions(tfn.irreps_out, pooled)
    report = assert_equivariant(f, (x, pos, edge_index, batch), product_sampler(e3_sampler(), permutation_sampler(12)),
                                act_in, act_out, n_samples=16, atol=EQ_TOL)
    print(f"TFN E(3) x S_N ({'pooled' if pooled else 'per node'}):", report)
    assert report.scale > 1e-2


def test_negative_control_wrong_parity_fails_under_reflections():
    tfn = model()
    x, pos, edge_index, batch = two_clouds()
    f = lambda x, p, e, b: tfn(x, p, e, b, num_graphs=2)  # noqa: E731
    sample = product_sampler(e3_sampler(), permutation_sampler(12))
    act_in, _ = actions(tfn.irreps_out, True)
    _, act_wrong = actions("1x0e+1x0e+1x1o", True)  # the 0o output treated as an invariant
    assert equivariance_report(f, (x, pos, edge_index, batch), sample, act_in, act_wrong).max_error > 1e-3


def chiral_outputs(tfn, shape, rotate=None):
    pos = shape if rotate is None else shape @ rotate.T
    edge_index = radius_graph(pos, 1.1)  # the tetromino's bonds
    ones = torch.ones(4, tfn.irreps_in.dim, dtype=F64)
    return tfn(ones, pos, edge_index, torch.zeros(4, dtype=torch.long), num_graphs=1)[0]


def test_parity_0o_flips_and_0e_does_not_and_chirality():
    torch.manual_seed(1)
    tfn = TensorFieldNetwork("1x0e", HIDDEN, "1x0e+1x0o", num_layers=3, cutoff=1.5).double()
    y, y_mirror = chiral_outputs(tfn, CHIRAL), chiral_outputs(tfn, MIRROR)
    R = rand_rotation(generator=torch.Generator().manual_seed(2))
    y_rot = chiral_outputs(tfn, CHIRAL, rotate=R)
    print("chiral shape: 0e, 0o =", y.tolist(), "mirror image:", y_mirror.tolist())
    # any rotation leaves both outputs unchanged ...
    torch.testing.assert_close(y_rot, y, atol=1e-13, rtol=0)
    # ... the mirror image keeps the 0e output and flips the 0o output
    torch.testing.assert_close(y_mirror[0], y[0], atol=1e-13, rtol=0)
    torch.testing.assert_close(y_mirror[1], -y[1], atol=1e-13, rtol=0)
    # so the 0o output tells the two apart (and they are not rotations of each other)
    assert abs(float(y[1].detach())) > 1e-3


def test_natural_parity_model_cannot_tell_mirror_images_apart():
    torch.manual_seed(3)
    natural = TensorFieldNetwork("1x0e", NATURAL, "4x0e", num_layers=3, cutoff=1.5).double()
    assert all(ir.p == (-1) ** ir.l for g in natural.gates for _, ir in g.irreps_out)
    y, y_mirror = chiral_outputs(natural, CHIRAL), chiral_outputs(natural, MIRROR)
    torch.testing.assert_close(y_mirror, y, atol=1e-13, rtol=0)
    assert y.abs().max() > 1e-3  # not trivially zero
    # the two shapes differ in other ways it can see: a different (non-mirror) shape changes the output
    other = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 1, 0]], dtype=F64)  # the L tetromino
    assert (chiral_outputs(natural, other) - y).abs().max() > 1e-3
    # and it cannot even be asked for a pseudoscalar
    with pytest.raises(ValueError, match="irreps_out=1x0o cannot be produced"):
        TensorFieldNetwork("1x0e", NATURAL, "1x0o", num_layers=3)


def test_0o_needs_three_layers_from_scalars():
    for layers in (1, 2):
        with pytest.raises(ValueError, match="irreps_out=1x0o cannot be produced"):
            TensorFieldNetwork("1x0e", HIDDEN, "1x0o", num_layers=layers)
    assert "0o" in str(TensorFieldNetwork("1x0e", HIDDEN, "1x0o", num_layers=3).gates[-1].irreps_out)


def test_pooling_sum_and_mean():
    tfn = model()
    x, pos, edge_index, batch = two_clouds()
    nodes = tfn(x, pos, edge_index)
    pooled = tfn(x, pos, edge_index, batch)  # num_graphs from batch
    torch.testing.assert_close(pooled, torch.stack([nodes[:7].sum(0), nodes[7:].sum(0)]), atol=1e-13, rtol=0)
    tfn.reduce = "mean"
    torch.testing.assert_close(tfn(x, pos, edge_index, batch, num_graphs=3)[:2],
                               torch.stack([nodes[:7].mean(0), nodes[7:].mean(0)]), atol=1e-13, rtol=0)
    assert torch.equal(tfn(x, pos, edge_index, batch, num_graphs=3)[2], torch.zeros(tfn.irreps_out.dim, dtype=F64))


def test_empty_graphs():
    tfn = model()
    d = tfn.irreps_out.dim
    x, pos = torch.randn(4, 5, dtype=F64), torch.randn(4, 3, dtype=F64)
    no_edges = torch.zeros(2, 0, dtype=torch.long)
    y = tfn(x, pos, no_edges)
    assert y.shape == (4, d) and torch.isfinite(y).all()
    empty_x, empty_pos, empty_batch = torch.zeros(0, 5, dtype=F64), torch.zeros(0, 3, dtype=F64), torch.zeros(0, dtype=torch.long)
    assert tfn(empty_x, empty_pos, no_edges).shape == (0, d)
    assert tfn(empty_x, empty_pos, no_edges, empty_batch).shape == (0, d)
    assert torch.equal(tfn(empty_x, empty_pos, no_edges, empty_batch, num_graphs=2), torch.zeros(2, d, dtype=F64))


def test_float32_and_float64():
    torch.manual_seed(4)
    tfn = TensorFieldNetwork("2x0e+1x1o", HIDDEN, "1x0e+1x0o", num_layers=3, cutoff=2.5)  # float32 parameters
    x, pos, edge_index, batch = two_clouds()
    y32 = tfn(x.float(), pos.float(), edge_index, batch)
    y64 = tfn.double()(x, pos, edge_index, batch)
    assert y64.dtype == F64 and y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="a module's parameters must match its input"):
        tfn(x.float(), pos.float(), edge_index, batch)


def test_bad_inputs():
    tfn = model()
    x, pos, edge_index, batch = two_clouds()
    with pytest.raises(ValueError, match=r"batch must have shape \[N\] = \[12\]"):
        tfn(x, pos, edge_index, batch[:-1])
    with pytest.raises(TypeError, match="batch must be an integer tensor"):
        tfn(x, pos, edge_index, batch.double())
    with pytest.raises(ValueError, match="batch must hold non-negative graph indices"):
        tfn(x, pos, edge_index, batch - 1)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 5\]"):
        tfn(x[:, :4], pos, edge_index)
    with pytest.raises(ValueError, match=r"edge_index has entries in"):
        tfn(x, pos, edge_index + 12)
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\]"):
        tfn(x, pos[:, :2], edge_index, batch)
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        TensorFieldNetwork(num_layers=0)
    with pytest.raises(ValueError, match="reduce must be 'sum' or 'mean'"):
        TensorFieldNetwork(reduce="max")
    with pytest.raises(ValueError, match="can reach none of irreps_hidden"):
        TensorFieldNetwork("1x0e", "4x3o", "1x0e", lmax=1)
    with pytest.raises(ValueError, match="0o missing"):  # partly producible: no silent zeros
        TensorFieldNetwork("1x0e", HIDDEN, "1x0e+1x0o", num_layers=2)


def test_compiles_to_one_graph():
    torch._dynamo.reset()
    tfn = model(num_layers=2, irreps_out="1x0e+1x1o")
    x, pos, edge_index, batch = two_clouds()
    pos = pos.requires_grad_(True)
    # backend="eager": Dynamo's capture alone decides fullgraph (any graph break raises); the
    # layers' backward graphs are traced by AOTAutograd in test_point_conv / test_tensor_product
    compiled = torch.compile(tfn, fullgraph=True, backend="eager")
    y = tfn(x, pos, edge_index, batch, num_graphs=2)
    yc = compiled(x, pos, edge_index, batch, num_graphs=2)
    torch.testing.assert_close(yc, y, atol=1e-13, rtol=0)
    (g,) = torch.autograd.grad(y[:, 0].sum(), pos)  # forces from the invariant output
    (gc,) = torch.autograd.grad(yc[:, 0].sum(), pos)
    torch.testing.assert_close(gc, g, atol=1e-13, rtol=0)


def test_num_graphs_smaller_than_the_batch_is_refused():
    from minequi.attention import SE3Transformer

    pos = torch.randn(3, 3, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    batch = torch.tensor([0, 1, 2])
    for net in (TensorFieldNetwork("1x0e", "4x0e+2x1o", "1x0e", num_layers=1, lmax=1).double(),
                SE3Transformer("1x0e", "4x0e+2x1o", "1x0e", num_layers=1, num_heads=2, lmax=1).double()):
        with pytest.raises(ValueError, match="num_graphs=2 but batch holds graph index 2"):
            net(torch.ones(3, 1, dtype=torch.float64), pos, edge_index, batch, num_graphs=2)
        assert net(torch.ones(3, 1, dtype=torch.float64), pos, edge_index, batch, num_graphs=3).shape == (3, 1)
