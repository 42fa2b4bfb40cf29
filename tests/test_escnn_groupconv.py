"""Cross-check of minequi's p4 / p4m layers against escnn's R2Conv with regular representations.

What is compared (escnn is only a test/book dependency, never imported by minequi):

1. The group elements: each minequi point-group element h is matched with the escnn element whose
   action on a trivial field (an image) is the same array transform; the fibre (group-axis) order is
   matched through escnn's regular representation, sigma(v) = escnn index of phi(v).
2. minequi's layers are equivariant under *escnn's* definition of the action on regular fields
   (GeometricTensor.transform), measured with minequi's checker.
3. minequi's filter bank satisfies escnn's kernel constraint K(g x) = rho_out(g) K(x) rho_in(g)^-1
   with escnn's regular representation matrices; escnn's own kernel passes the same check and a
   random kernel fails it.
4. Spaces: every escnn regular->regular kernel is a minequi kernel (reading minequi's weights off the
   identity slice of escnn's kernel rebuilds escnn's kernel exactly), but not conversely: escnn
   parameterises a band-limited subspace (fewer parameters).
"""
import warnings

import pytest
import torch

escnn = pytest.importorskip("escnn")
from escnn import gspaces  # noqa: E402
from escnn import nn as enn  # noqa: E402

import escnn.group._numerical as _escnn_numerical  # noqa: E402

from minequi.groupconv import GroupConv2d, LiftingConv2d, point_group, transform_image  # noqa: E402
from minequi.testing import equivariance_error  # noqa: E402

# escnn 1.0.11 hands an np.matrix to scikit-learn's randomized_svd, which current scikit-learn refuses
# (TypeError) when escnn builds D4's Clebsch-Gordan coefficients; None selects escnn's own fallback,
# the exact (deterministic) scipy SVD.
_escnn_numerical.randomized_svd = None
warnings.filterwarnings("ignore", module="escnn")

GROUPS = ["p4", "p4m"]


def gspace(group):
    return gspaces.rot2dOnR2(N=4) if group == "p4" else gspaces.flipRot2dOnR2(N=4)


def correspondence(group):
    """phi[h] = escnn element acting like minequi's h on images; sigma[v] = escnn fibre index of v."""
    gs = gspace(group)
    els = list(gs.fibergroup.elements)
    triv = enn.FieldType(gs, [gs.trivial_repr])
    x = torch.randn(1, 1, 7, 7, dtype=torch.float64)
    phi = []
    for h in range(point_group(group).order):
        hits = [e for e in els if torch.equal(enn.GeometricTensor(x, triv).transform(e).tensor, transform_image(x, h, group))]
        assert len(hits) == 1
        phi.append(hits[0])
    rho = [torch.tensor(gs.regular_repr(e), dtype=torch.float64) for e in phi]  # escnn matrices, minequi order
    assert all((r - r.round()).abs().max() < 1e-12 for r in rho)  # permutation matrices up to rounding
    rho = [r.round() for r in rho]
    sigma = [int(r[:, 0].argmax()) for r in rho]  # rho(v) e_identity = e_v
    return gs, phi, rho, sigma


@pytest.mark.parametrize("group", GROUPS)
def test_fibre_order_is_a_consistent_relabelling(group):
    """escnn's regular representation, re-indexed by sigma, is minequi's regular representation."""
    gs, phi, rho, sigma = correspondence(group)
    G = point_group(group)
    mine = G.regular_representation()
    P = torch.zeros(G.order, G.order, dtype=torch.float64)
    P[sigma, torch.arange(G.order)] = 1.0  # minequi basis vector v -> escnn basis vector sigma[v]
    for h in range(G.order):
        assert torch.equal(P.T @ rho[h] @ P, mine[h])


def to_escnn(x, sigma):
    """[B, F, |G|, H, W] (minequi order) -> [B, F*|G|, H, W] (escnn fibre order)."""
    B, Fd, n = x.shape[:3]
    out = torch.empty_like(x)
    out[:, :, sigma] = x
    return out.reshape(B, Fd * n, *x.shape[-2:])


def from_escnn(y, n, sigma):
    B = y.shape[0]
    return y.reshape(B, -1, n, *y.shape[-2:])[:, :, sigma]


@pytest.mark.parametrize("group", GROUPS)
def test_minequi_equivariant_under_escnn_action(group):
    gs, phi, rho, sigma = correspondence(group)
    n = len(phi)
    torch.manual_seed(0)
    layer = GroupConv2d(3, 2, 5, group=group, padding=2).double()
    lift = LiftingConv2d(1, 3, 5, group=group, padding=2).double()
    in_type = enn.FieldType(gs, 3 * [gs.regular_repr])
    out_type = enn.FieldType(gs, 2 * [gs.regular_repr])
    img_type = enn.FieldType(gs, [gs.trivial_repr])
    f = lambda x: to_escnn(layer(from_escnn(x, n, sigma)), sigma)
    lifted = lambda x: to_escnn(lift(x), sigma)
    x = torch.randn(2, 3 * n, 11, 11, dtype=torch.float64)
    img = torch.randn(2, 1, 11, 11, dtype=torch.float64)
    act = lambda ft: (lambda e, t: enn.GeometricTensor(t, ft).transform(e).tensor)
    sample = lambda gen, dtype: phi[int(torch.randint(0, n, (), generator=gen))]
    assert equivariance_error(f, x, sample, act(in_type), act(out_type), n_samples=12) < 1e-12
    assert equivariance_error(lifted, img, sample, act(img_type), act(in_type), n_samples=12) < 1e-12
    # negative control: escnn's action with the fibres left in minequi's order (no sigma) is not matched
    if group == "p4m":
        g = lambda x: layer(x.reshape(2, 3, n, 11, 11)).reshape(2, 2 * n, 11, 11)
        assert equivariance_error(g, x, sample, act(in_type), act(out_type), n_samples=12) > 0.1


def _constraint_error(K, gs, phi, rho, n_out, n_in):
    """max_g |K(g x) - rho_out(g) K(x) rho_in(g)^-1| for K [n_out*|G|, n_in*|G|, k, k] in escnn order."""
    k = K.shape[-1]
    triv = enn.FieldType(gs, [gs.trivial_repr])
    err = 0.0
    for e, r in zip(phi, rho):
        # K(g x) = (L_{g^-1} K)(x): transform the kernel, seen as a stack of images, by g^-1 with escnn
        Kg = enn.GeometricTensor(K.reshape(-1, 1, k, k), triv).transform(~e).tensor.reshape(K.shape)
        R_out = torch.block_diag(*[r] * n_out)
        R_in = torch.block_diag(*[r] * n_in)
        rhs = torch.einsum("ab,bcxy,cd->adxy", R_out, K, R_in.T)
        err = max(err, float((Kg - rhs).abs().max()))
    return err


@pytest.mark.parametrize("group", GROUPS)
def test_minequi_filter_satisfies_escnn_kernel_constraint(group):
    gs, phi, rho, sigma = correspondence(group)
    n = len(phi)
    torch.manual_seed(1)
    layer = GroupConv2d(2, 3, 5, group=group).double()
    K = layer.filter_bank().detach().reshape(3, n, 2, n, 5, 5)
    K_escnn = K[:, torch.argsort(torch.tensor(sigma))][:, :, :, torch.argsort(torch.tensor(sigma))]
    K_escnn = K_escnn.reshape(3 * n, 2 * n, 5, 5)
    assert _constraint_error(K_escnn, gs, phi, rho, 3, 2) < 1e-12
    # escnn's own kernel satisfies it too (positive control of the check, float32 basis)
    conv = enn.R2Conv(enn.FieldType(gs, 2 * [gs.regular_repr]), enn.FieldType(gs, 3 * [gs.regular_repr]), 5)
    K_e = conv.expand_parameters()[0].detach().double()
    assert _constraint_error(K_e, gs, phi, rho, 3, 2) < 1e-5 * float(K_e.abs().max())
    # a random kernel does not (negative control)
    assert _constraint_error(torch.randn_like(K_escnn), gs, phi, rho, 3, 2) > 0.5
    # escnn's kernel is in minequi's space: read minequi's weights off escnn's identity output slice
    K_e6 = K_e.reshape(3, n, 2, n, 5, 5)[:, sigma][:, :, :, sigma]  # minequi order [o, u, i, v, k, k]
    rebuilt = GroupConv2d(2, 3, 5, group=group).double()
    with torch.no_grad():
        rebuilt.weight.copy_(K_e6[:, 0])  # the u = identity slice is the free filter
    assert torch.allclose(rebuilt.filter_bank().reshape(3, n, 2, n, 5, 5), K_e6, atol=1e-6 * float(K_e.abs().max()))
    # ... while escnn's space is a strict subspace: fewer parameters than minequi's full filters
    assert conv.weights.numel() < layer.weight.numel()


class _MinequiAsEscnn(enn.EquivariantModule):
    """minequi's lifting + ReLU + group convolution, seen by escnn as a module on escnn's field types
    (the fibres re-indexed by sigma), so that escnn's own equivariance check can be applied to it."""

    def __init__(self, group, sigma, shift=False):
        super().__init__()
        gs = gspace(group)
        self.in_type = enn.FieldType(gs, [gs.trivial_repr])
        self.out_type = enn.FieldType(gs, 2 * [gs.regular_repr])
        self.sigma, self.shift = sigma, shift
        self.net = torch.nn.Sequential(LiftingConv2d(1, 2, 5, group=group, padding="same"), torch.nn.ReLU(),
                                       GroupConv2d(2, 2, 5, group=group, padding="same"))

    def forward(self, x):
        t = x.tensor.roll(1, -1) if self.shift else x.tensor  # shift: a deliberately broken version
        return enn.GeometricTensor(to_escnn(self.net(t), self.sigma), self.out_type)

    def evaluate_output_shape(self, input_shape):
        return (input_shape[0], self.out_type.size, *input_shape[2:])


@pytest.mark.parametrize("group", GROUPS)
def test_escnn_own_check_on_minequi_network(group, capsys):
    """escnn's generic check (EquivariantModule.check_equivariance: 20 elements sampled by escnn, escnn's
    action on the fields, float32 input 3 x 1 x 10 x 10) applied to a minequi lifting + group
    convolution stack.  Positive control: the same check on escnn's own twin network; negative control:
    the minequi network with its input shifted by one pixel fails it."""
    gs, phi, rho, sigma = correspondence(group)
    torch.manual_seed(2)
    mine = _MinequiAsEscnn(group, sigma).eval()
    errors = enn.EquivariantModule.check_equivariance(mine, atol=1e-5, rtol=1e-4)  # asserts inside
    assert len(errors) == 20
    worst = max(e for _, e in errors)  # escnn reports the mean |error| per element
    print(f"{group}: escnn's check on minequi's network, worst mean error {worst:.1e}")
    assert worst < 2e-5  # float32; measured 2.1e-7 (p4) and 2.3e-7 (p4m)
    # positive control of the check: escnn's own twin network
    img_t = enn.FieldType(gs, [gs.trivial_repr])
    reg_t = enn.FieldType(gs, 2 * [gs.regular_repr])
    net = enn.SequentialModule(enn.R2Conv(img_t, reg_t, 5, padding=2), enn.ReLU(reg_t), enn.R2Conv(reg_t, reg_t, 5, padding=2))
    net.eval()
    assert len(enn.EquivariantModule.check_equivariance(net, atol=1e-5, rtol=1e-4)) == 20
    # negative control: a broken minequi network fails escnn's check
    with pytest.raises(AssertionError, match="error found during equivariance check"):
        enn.EquivariantModule.check_equivariance(_MinequiAsEscnn(group, sigma, shift=True).eval(), atol=1e-5, rtol=1e-4)
