"""Every public function and module compiles to ONE graph and matches eager mode.

``torch.compile(..., fullgraph=True)`` raises on any graph break (a host synchronisation such
as ``.item()``/``bool()`` on a tensor, an untraceable call, ...).  That check is done by
Dynamo's capture, whatever the backend, so the test uses ``backend="eager"``: the cheapest
backend (it runs the captured graph with the ordinary kernels, no code generation; on two CPU
cores Inductor would take about 30 s per function).  The outputs are then compared with the
uncompiled call, in float64, forward and (where there is an input gradient) backward.  One test
also runs ``backend="aot_eager"``, which additionally traces the backward graph through
AOTAutograd (functionalisation), for spherical harmonics, the function whose gradient gives
forces.  The list of objects is explicit: a module missing from this file is a gap, not a pass.
"""
import pytest
import torch

import minequi
from minequi import (Gate, GroupConv2d, GroupPool, LiftingConv2d, Linear, SpatialPool2d, SphericalHarmonics,
                     TensorProduct, spherical_harmonics, wigner_D)
from minequi.testing import rand_rotation

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _points():
    x = torch.randn(7, 3, dtype=F64, generator=gen())
    x[2] = 0  # the origin: the masked branch must be in the graph too
    return x


def _point_conv():
    from minequi.point_conv import PointConv

    conv = PointConv("2x0e+2x1o", "0e+1o+2e", "2x0e+2x1o+2x2e", num_basis=4, cutoff=2.0).double()
    pos = torch.randn(5, 3, dtype=F64, generator=gen(1))
    x = torch.randn(5, conv.irreps_in.dim, dtype=F64, generator=gen(2))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 0, 3, 2, 0, 4]])
    return conv, (x, pos, edge_index)


def _egnn_layer():
    from minequi.egnn import EGNNLayer

    torch.manual_seed(0)
    layer = EGNNLayer(4, 4, 8).double()
    h = torch.randn(5, 4, dtype=F64, generator=gen(1))
    x = torch.randn(5, 3, dtype=F64, generator=gen(2))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 0, 3, 2, 0, 4]])
    return layer, (h, x, edge_index)


def _egnn():
    from minequi.egnn import EGNN

    torch.manual_seed(0)
    model = EGNN(4, 8, 2, num_layers=2, pool="sum").double()
    h = torch.randn(5, 4, dtype=F64, generator=gen(1))
    x = torch.randn(5, 3, dtype=F64, generator=gen(2))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 0, 3, 2, 0, 4]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    return (lambda h, x, e: model(h, x, e, batch=batch, num_graphs=2)), (h, x, edge_index)


def _tfn():
    from minequi.tfn import TensorFieldNetwork

    torch.manual_seed(0)
    model = TensorFieldNetwork("1x0e", "4x0e+2x1o+2x1e", "1x0e", num_layers=2, lmax=1, num_basis=4,
                               cutoff=2.0).double()
    x = torch.ones(5, 1, dtype=F64)
    pos = torch.randn(5, 3, dtype=F64, generator=gen(2))
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 0, 3, 2, 0, 4]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    return (lambda x, p, e: model(x, p, e, batch=batch, num_graphs=2)), (x, pos, edge_index)


def _radial(name):
    from minequi import radial

    m = radial.BesselBasis(4, 2.0) if name == "BesselBasis" else radial.PolynomialCutoff(2.0, 6)
    return m.double(), (torch.linspace(0.1, 2.5, 9, dtype=F64),)


def _module(m, *inputs):
    torch.manual_seed(0)
    return m.double(), inputs


# name -> () -> (callable, inputs); inputs[0] (or inputs[1] for the graph layers) gets a gradient
CASES = {
    "spherical_harmonics": lambda: (lambda x: spherical_harmonics([0, 1, 2, 3], x), (_points(),)),
    "spherical_harmonics normalize=False": lambda: (
        lambda x: spherical_harmonics([1, 2], x, normalize=False, normalization="integral"), (_points(),)),
    "SphericalHarmonics": lambda: (SphericalHarmonics(3, normalization="norm"), (_points(),)),
    "wigner_D": lambda: (lambda R: wigner_D(3, R), (rand_rotation(4, generator=gen()),)),
    "Linear": lambda: _module(Linear("2x0e+2x1o+1x2e", "3x0e+1x1o+1x2e", bias=True),
                              torch.randn(4, 13, dtype=F64, generator=gen())),
    "Gate": lambda: (Gate("2x0e+1x0o", [torch.relu, torch.tanh], "2x0e", torch.sigmoid, "1x1o+1x2e"),
                     (torch.randn(4, 13, dtype=F64, generator=gen()),)),
    "TensorProduct": lambda: _module(TensorProduct("2x0e+2x1o", "0e+1o+2e", "2x0e+2x1o+1x1e+1x2e"),
                                     torch.randn(4, 8, dtype=F64, generator=gen()),
                                     torch.randn(4, 9, dtype=F64, generator=gen(1))),
    "LiftingConv2d": lambda: _module(LiftingConv2d(2, 3, 3, group="p4m", padding="same"),
                                     torch.randn(2, 2, 7, 7, dtype=F64, generator=gen())),
    "GroupConv2d": lambda: _module(GroupConv2d(2, 3, 3, group="p4", padding=1, padding_mode="circular"),
                                   torch.randn(2, 2, 4, 7, 7, dtype=F64, generator=gen())),
    "GroupPool": lambda: (GroupPool("mean"), (torch.randn(2, 3, 8, 5, 5, dtype=F64, generator=gen()),)),
    "SpatialPool2d": lambda: (SpatialPool2d(3, 2, 1), (torch.randn(2, 3, 8, 7, 7, dtype=F64, generator=gen()),)),
    "BesselBasis": lambda: _radial("BesselBasis"),
    "PolynomialCutoff": lambda: _radial("PolynomialCutoff"),
    "PointConv": _point_conv,
    "EGNNLayer": _egnn_layer,
    "EGNN": _egnn,
    "TensorFieldNetwork": _tfn,
}
GRAPH_LAYERS = ("PointConv", "EGNNLayer", "EGNN", "TensorFieldNetwork")  # the gradient is taken w.r.t. the positions


def _flat(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", list(CASES))
def test_compiles_to_one_graph_and_matches_eager(name):
    f, inputs = CASES[name]()
    grad_at = 1 if name in GRAPH_LAYERS else 0

    def run(fn):
        xs = [t.clone() for t in inputs]
        xs[grad_at].requires_grad_(True)
        ys = _flat(fn(*xs))
        loss = sum((y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum() for y in ys)
        (g,) = torch.autograd.grad(loss, xs[grad_at])
        return ys, g

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    ys_e, g_e = run(f)
    ys_c, g_c = run(compiled)  # forward and backward
    for a, b in zip(ys_e, ys_c):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-13)  # measured: 0 (the same kernels run)
    torch.testing.assert_close(g_c, g_e, rtol=0, atol=1e-13)
    if isinstance(f, (LiftingConv2d, GroupConv2d)):  # eval mode without grad: the cached filter bank
        f.eval()
        with torch.no_grad():
            for _ in range(2):  # build the cache, then use it
                torch.testing.assert_close(compiled(*inputs), ys_e[0].detach(), rtol=0, atol=1e-13)


def test_spherical_harmonics_forward_and_backward_through_aot_autograd():
    f = torch.compile(lambda x: spherical_harmonics([0, 1, 2], x), fullgraph=True, backend="aot_eager")
    x = _points().requires_grad_(True)
    y = f(x)
    (g,) = torch.autograd.grad(y.pow(2).sum() + y.sum(), x)
    x2 = _points().requires_grad_(True)
    y2 = spherical_harmonics([0, 1, 2], x2)
    (g2,) = torch.autograd.grad(y2.pow(2).sum() + y2.sum(), x2)
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-14)
    torch.testing.assert_close(g, g2, rtol=0, atol=1e-14)
    assert torch.equal(g[2], torch.zeros(3, dtype=F64))  # zero gradient at the origin, compiled too


def test_compiled_wigner_D_still_rejects_a_non_rotation():
    """Under torch.compile the orthogonality check is an in-graph assertion (no graph break)."""
    f = torch.compile(lambda R: wigner_D(2, R), fullgraph=True, backend="eager")
    R = rand_rotation(2, generator=gen())
    f(R)
    with pytest.raises(RuntimeError, match="R must be orthogonal"):
        f(1.1 * R)
    with pytest.raises(RuntimeError, match="R must be a rotation"):
        f(-R)


def test_negative_control_a_host_synchronisation_breaks_fullgraph():
    """The check above can fail: a function that reads a value on the host does not compile
    with fullgraph=True (this is what spherical_harmonics did before: bool(nonzero.all()))."""
    def f(x):
        y = spherical_harmonics(1, x)
        if bool((x != 0).all()):
            return y
        return 2 * y

    with pytest.raises(Exception, match=r"(?i)data-dependent|graph break|Unsupported"):
        torch.compile(f, fullgraph=True, backend="eager")(_points())


# Modules whose full-graph compile check lives in their own test file (their inputs need more
# set-up than a CASES entry): name -> (test file, test function).  The test below checks that
# the named test exists, so an entry cannot point at nothing.
COMPILED_ELSEWHERE = {
    "EquivariantAttention": ("test_attention.py", "test_compile_matches_eager"),  # inside SE3Transformer
    "SE3Transformer": ("test_attention.py", "test_compile_matches_eager"),
    "InvariantPointAttention": ("test_ipa.py", "test_compile_fullgraph_matches_eager"),
    "InteratomicPotential": ("test_potential.py", "test_node_energies_compile_to_one_graph"),
}


def test_every_public_module_is_listed():
    """A new public nn.Module (or the functions above) must be added to CASES (or, with a
    compile test of its own, to COMPILED_ELSEWHERE)."""
    from pathlib import Path

    public = {n for n in minequi.__dict__ if isinstance(getattr(minequi, n), type)
              and issubclass(getattr(minequi, n), torch.nn.Module)}
    listed = {n.split()[0] for n in CASES} | set(COMPILED_ELSEWHERE)
    assert public <= listed, f"not compiled in this test: {sorted(public - listed)}"
    here = Path(__file__).parent
    for name, (file, test) in COMPILED_ELSEWHERE.items():
        assert f"def {test}(" in (here / file).read_text(encoding="utf-8"), f"{name}: {file}::{test} is missing"
