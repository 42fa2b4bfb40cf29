"""Tests of minequi.groupconv: p4 / p4m lifting and group convolutions."""
import copy

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from minequi.groupconv import (
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    SpatialPool2d,
    group_pool,
    point_group,
    spatial_pool,
    transform_feature_map,
    transform_image,
)
from minequi.symbolic import groupconv as sym
from minequi.testing import assert_equivariant, equivariance_error, product_sampler, shift2d_sampler

GROUPS = ["p4", "p4m"]


# ----------------------------------------------------------------------------- actions
def element_sampler(h, H, W):
    """Sampler of p4(m) elements with fixed point part h and a uniform cyclic translation."""
    shifts = shift2d_sampler(H, W)
    return lambda gen, dtype: (h, shifts(gen, dtype))


def act_image(group):
    """(h, (dy, dx)): first the point group element about the centre, then a cyclic shift."""
    return lambda g, x: torch.roll(transform_image(x, g[0], group), g[1], dims=(-2, -1))


def act_features(group):
    return lambda g, x: torch.roll(transform_feature_map(x, g[0], group), g[1], dims=(-2, -1))


@pytest.mark.parametrize("H", [7, 6])
def test_transform_image_moves_points_by_the_group_matrices(H):
    """A value at the point p (x right, y up, origin at the centre) moves to M_h p."""
    G = point_group("p4m")
    c = (H - 1) / 2
    for h in range(8):
        for i, j in [(0, 1), (2, 5), (H - 1, 0)]:
            img = torch.zeros(H, H)
            img[i, j] = 1.0
            out = transform_image(img, h, "p4m")
            p = torch.tensor([j - c, c - i], dtype=torch.float64)
            q = G.matrices[h] @ p
            i2, j2 = round(c - float(q[1])), round(float(q[0]) + c)
            assert out[i2, j2] == 1.0 and out.sum() == 1.0, (h, i, j)


@pytest.mark.parametrize("group", GROUPS)
def test_feature_map_action_is_the_regular_representation(group):
    G = point_group(group)
    n = G.order
    x = torch.randn(2, 3, n, 5, 5, dtype=torch.float64)
    rho = G.regular_representation()
    for a in range(n):
        # group axis: new = rho(a) old, spatial: transform_image
        expected = transform_image(torch.einsum("uv,bcvij->bcuij", rho[a], x), a, group)
        assert torch.equal(transform_feature_map(x, a, group), expected)
        for b in range(n):  # homomorphism L_a L_b = L_{ab}
            ab = int(G.table[a, b])
            lhs = transform_feature_map(transform_feature_map(x, b, group), a, group)
            assert torch.equal(lhs, transform_feature_map(x, ab, group))


# ----------------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("group", GROUPS)
def test_lifting_exactly_equivariant_to_every_element_with_translations(group):
    torch.manual_seed(0)
    layer = LiftingConv2d(3, 4, 3, group=group, padding="same", padding_mode="circular")
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    for h in range(point_group(group).order):
        assert_equivariant(layer, x, element_sampler(h, 9, 9), act_image(group), act_features(group),
                           n_samples=3, seed=h, atol=1e-12)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("k", [3, 5])
def test_group_conv_exactly_equivariant_to_every_element_with_translations(group, k):
    torch.manual_seed(1)
    n = point_group(group).order
    layer = GroupConv2d(3, 2, k, group=group, padding="same", padding_mode="circular")
    x = torch.randn(2, 3, n, 11, 11, dtype=torch.float64)
    for h in range(n):
        assert_equivariant(layer, x, element_sampler(h, 11, 11), act_features(group), act_features(group),
                           n_samples=3, seed=h, atol=1e-12)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("padding", [0, 2])
def test_zero_padding_exact_for_point_group(group, padding):
    """Zero padding (valid or 'same') is exact for rotations / mirrors about the centre of an odd image."""
    torch.manual_seed(2)
    n = point_group(group).order
    lift = LiftingConv2d(2, 3, 5, group=group, padding=padding)
    conv = GroupConv2d(3, 2, 5, group=group, padding=padding)
    x = torch.randn(2, 2, 13, 13, dtype=torch.float64)
    f = torch.nn.Sequential(lift, torch.nn.ReLU(), conv)  # a Module: the checker casts it to float64
    for h in range(n):
        sample = lambda gen, dtype, h=h: (h, (0, 0))
        assert_equivariant(f, x, sample, act_image(group), act_features(group), n_samples=1, atol=1e-12)


@pytest.mark.parametrize("group", GROUPS)
def test_stack_with_pooling_is_equivariant_and_invariant(group):
    torch.manual_seed(3)
    n = point_group(group).order
    net = torch.nn.Sequential(
        LiftingConv2d(1, 4, 3, group=group, padding=1), torch.nn.ReLU(),
        GroupConv2d(4, 4, 3, group=group, padding=1), torch.nn.ReLU(),
        SpatialPool2d(3, 2),                            # 15 -> 7, windows symmetric about the centre
        GroupConv2d(4, 3, 3, group=group), torch.nn.ReLU(),  # 7 -> 5
        GroupPool("max"),                               # -> an ordinary image [B, 3, 5, 5]
    ).double()
    x = torch.randn(3, 1, 15, 15, dtype=torch.float64)
    for h in range(n):
        sample = lambda gen, dtype, h=h: (h, (0, 0))
        assert_equivariant(net, x, sample, act_image(group), act_image(group), n_samples=1, atol=1e-12)
        # invariant after global spatial pooling
        inv = lambda x: net(x).mean(dim=(-2, -1))
        assert_equivariant(inv, x, sample, act_image(group), lambda g, y: y, n_samples=1, atol=1e-12)


# ----------------------------------------------------------------------------- negative controls
def _index_without_group_permutation(layer):
    """The filter-bank index of `layer` with the group-axis permutation removed (spatial rotation only)."""
    G = point_group(layer.group)
    n, k = G.order, layer.kernel_size
    O, I, kk = layer.out_fields, layer.in_fields, k * k
    pix = torch.arange(kk).reshape(k, k)
    spatial = torch.stack([transform_image(pix, u, layer.group).reshape(-1) for u in range(n)])
    v = torch.arange(n)[None, :, None]
    inner = v * kk + spatial[:, None, :]  # [n, n, kk]: v instead of u^-1 v
    o = torch.arange(O).reshape(O, 1, 1, 1, 1)
    i = torch.arange(I).reshape(1, 1, I, 1, 1)
    return (o * (I * n * kk) + i * (n * kk) + inner[None, :, None]).reshape(-1)


@pytest.mark.parametrize("group", GROUPS)
def test_negative_controls_fail_the_check(group):
    torch.manual_seed(4)
    n = point_group(group).order
    x = torch.randn(1, 2, n, 9, 9, dtype=torch.float64)
    broken = GroupConv2d(2, 2, 3, group=group, padding=1)
    broken._bank_index = _index_without_group_permutation(broken)
    sample = lambda gen, dtype: (1, (0, 0))  # the quarter turn
    assert equivariance_error(broken, x, sample, act_features(group), act_features(group), n_samples=1) > 0.1
    # the correct layer passes on the same input
    good = GroupConv2d(2, 2, 3, group=group, padding=1)
    assert equivariance_error(good, x, sample, act_features(group), act_features(group), n_samples=1) < 1e-12
    # a plain convolution (no filter rotation) is not rotation equivariant
    plain = torch.nn.Conv2d(1, 4, 3, padding=1).double()
    img = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    err = equivariance_error(plain, img, sample, act_image(group), act_image(group), n_samples=1)
    assert err > 0.1
    # the feature-map action without the group permutation breaks equivariance of the correct layer
    lift = LiftingConv2d(1, 2, 3, group=group, padding=1)
    spatial_only = lambda g, y: transform_image(y, g[0], group)
    assert equivariance_error(lift, img, sample, act_image(group), spatial_only, n_samples=1) > 0.1
    # asymmetric pooling windows (9 - 2 = 7 is odd: kernel 2, stride 2 leaves a row and a column over) break it
    asym = lambda y: F.max_pool2d(y, 2, 2)
    assert equivariance_error(asym, img, sample, act_image(group), act_image(group), n_samples=1) > 0.1


# ----------------------------------------------------------------------------- symbolic == numeric
def _symbols(name, k):
    return sp.Matrix(k, k, lambda i, j: sp.Symbol(f"{name}_{i}{j}"))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("k", [3, 5])
def test_lifting_filter_bank_equals_symbolic_derivation(group, k):
    n = point_group(group).order
    layer = LiftingConv2d(2, 3, k, group=group).double()
    with torch.no_grad():
        layer.weight.copy_(torch.arange(layer.weight.numel(), dtype=torch.float64).reshape(layer.weight.shape))
    bank = layer.filter_bank().reshape(3, n, 2, k, k)
    psi = _symbols("psi", k)
    for h in range(n):
        Lpsi = sym.transform_filter(psi, h)
        for o in range(3):
            for c in range(2):
                vals = {psi[i, j]: float(layer.weight[o, c, i, j].detach()) for i in range(k) for j in range(k)}
                expected = torch.tensor(Lpsi.xreplace(vals).tolist(), dtype=torch.float64)
                assert torch.equal(bank[o, h, c], expected), (h, o, c)


@pytest.mark.parametrize("group", GROUPS)
def test_group_filter_bank_equals_symbolic_derivation(group):
    n, k = point_group(group).order, 3
    layer = GroupConv2d(2, 2, k, group=group).double()
    with torch.no_grad():
        layer.weight.copy_(torch.arange(layer.weight.numel(), dtype=torch.float64).reshape(layer.weight.shape))
    bank = layer.filter_bank().reshape(2, n, 2, n, k, k)
    psi = [_symbols(f"psi{v}", k) for v in range(n)]
    for u in range(n):
        Lpsi = sym.transform_group_filter(psi, u, group)
        for o in range(2):
            for c in range(2):
                vals = {psi[v][i, j]: float(layer.weight[o, c, v, i, j].detach())
                        for v in range(n) for i in range(k) for j in range(k)}
                for v in range(n):
                    expected = torch.tensor(Lpsi[v].xreplace(vals).tolist(), dtype=torch.float64)
                    assert torch.equal(bank[o, u, c, v], expected), (u, o, c, v)


@pytest.mark.parametrize("group", GROUPS)
def test_layers_equal_the_correlation_formulas(group):
    """Output [o, h, i, j] = sum_y f(y) psi(g^-1 y) at g = (pixel (i, j), h), evaluated exactly."""
    n, H, k = point_group(group).order, 5, 3  # every output of a 5 x 5 map (zero padding 1)
    gen = torch.Generator().manual_seed(5)
    lift = LiftingConv2d(1, 1, k, group=group, padding=1, bias=False).double()
    conv = GroupConv2d(1, 1, k, group=group, padding=1, bias=False).double()
    with torch.no_grad():
        lift.weight.copy_(torch.randint(-3, 4, lift.weight.shape, generator=gen))
        conv.weight.copy_(torch.randint(-3, 4, conv.weight.shape, generator=gen))
    img = torch.randint(-3, 4, (1, 1, H, H), generator=gen).double()
    fmap = torch.randint(-3, 4, (1, 1, n, H, H), generator=gen).double()
    with torch.no_grad():
        out_l, out_g = lift(img)[0, 0], conv(fmap)[0, 0]
    f = sym.array_to_function(sp.Matrix(img[0, 0].long().tolist()))
    psi = sym.array_to_function(sp.Matrix(lift.weight[0, 0].long().tolist()))
    Fn, Psi = {}, {}
    for v in range(n):
        for (x, y), val in sym.array_to_function(sp.Matrix(fmap[0, 0, v].long().tolist())).items():
            Fn[(x, y, v)] = val
        for (x, y), val in sym.array_to_function(sp.Matrix(conv.weight[0, 0, v].long().tolist())).items():
            Psi[(x, y, v)] = val
    c = (H - 1) // 2
    for h in range(n):
        for i in range(H):
            for j in range(H):
                g = sym.element(h, (j - c, c - i))
                assert float(sym.lifting_correlation(f, psi, g)) == float(out_l[h, i, j])
                assert float(sym.group_correlation(Fn, Psi, g)) == float(out_g[h, i, j])


@pytest.mark.parametrize("group", GROUPS)
def test_symbolic_transformation_law(group):
    """L_g f * psi = L_g (f * psi) exactly, for every point element combined with a translation."""
    n = point_group(group).order
    f = sym.array_to_function(_symbols("f", 3))
    psi = sym.array_to_function(_symbols("psi", 3))
    probes = [sym.element(u, t) for u in range(n) for t in [(0, 0), (1, -1), (2, 1)]]
    for h in range(n):
        g = sym.element(h, (1, 2))
        Lf = sym.act_image(g, f)
        for gp in probes:
            lhs = sym.lifting_correlation(Lf, psi, gp)
            rhs = sym.lifting_correlation(f, psi, g.inv() * gp)  # (L_g (f * psi))(g') = (f * psi)(g^-1 g')
            assert sp.expand(lhs - rhs) == 0
    # the table derived from the 3x3 matrices is the one of minequi.groups
    assert sym.point_table(group) == point_group(group).table.tolist()


# ----------------------------------------------------------------------------- dtype, device, modules
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_module_and_input(dtype):
    torch.manual_seed(6)
    net = torch.nn.Sequential(LiftingConv2d(1, 2, 3, "p4m", padding=1), GroupConv2d(2, 2, 3, "p4m", padding=1)).to(dtype)
    x = torch.randn(2, 1, 9, 9, dtype=dtype)
    y = net(x)
    assert y.dtype == dtype and y.shape == (2, 2, 8, 9, 9)
    err = (net(transform_image(x, 3)) - transform_feature_map(y, 3)).abs().max()
    assert err < (1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(7)
    layer = GroupConv2d(2, 3, 3, "p4m", padding=1).double()
    x = torch.randn(2, 2, 8, 9, 9, dtype=torch.float64)
    gpu = copy.deepcopy(layer).cuda()
    assert torch.allclose(gpu(x.cuda()).cpu(), layer(x), atol=1e-12)
    gpu.eval()
    with torch.no_grad():
        assert torch.allclose(gpu(x.cuda()).cpu(), layer(x), atol=1e-12)


def test_state_dict_has_only_parameters():
    layer = GroupConv2d(2, 3, 3, "p4")
    assert set(layer.state_dict()) == {"weight", "bias"}
    assert layer.weight.shape == (3, 2, 4, 3, 3) and layer.bias.shape == (3,)
    assert LiftingConv2d(2, 3, 5, "p4m", bias=False).weight.shape == (3, 2, 5, 5)


# ----------------------------------------------------------------------------- eval-mode cache
def _fresh(layer, x):
    """The layer's output computed from its current weights, bypassing any cache."""
    bank = layer.filter_bank().detach()
    bias = None if layer.bias is None else layer.bias.detach().repeat_interleave(layer.group_order)
    y = F.conv2d(x.reshape(x.shape[0], -1, *x.shape[-2:]), bank, bias, padding=layer.padding)
    return y.reshape(x.shape[0], layer.out_fields, layer.group_order, *y.shape[-2:])


def test_eval_cache_is_used_and_invalidated():
    torch.manual_seed(8)
    layer = GroupConv2d(2, 3, 3, "p4m", padding=1)
    x = torch.randn(2, 2, 8, 7, 7)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.eval()
    with torch.no_grad():
        y0 = layer(x)
        cached = layer._cache[1]
        layer(x)
        assert layer._cache[1] is cached  # reused, not rebuilt
    # 1. optimizer step
    layer.train()
    layer(x).square().sum().backward()
    opt.step()
    layer.eval()
    with torch.no_grad():
        y1 = layer(x)
    assert not torch.allclose(y1, y0) and torch.equal(y1, _fresh(layer, x))
    # 2. load_state_dict (while in eval mode, cache warm)
    other = GroupConv2d(2, 3, 3, "p4m", padding=1)
    with torch.no_grad():
        layer(x)
        layer.load_state_dict(other.state_dict())
        assert torch.equal(layer(x), _fresh(layer, x)) and torch.equal(layer(x), other(x))
    # 3. in-place edits under no_grad, of the weight and of the bias
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(2.0)
        assert torch.equal(layer(x), _fresh(layer, x))
        layer.bias.add_(1.0)
        assert torch.equal(layer(x), _fresh(layer, x))
    # 4. .data edits are invisible to the version counter: clear_cache() is documented for them
    with torch.no_grad():
        layer(x)
        layer.weight.data.mul_(3.0)
        layer.clear_cache()
        assert torch.equal(layer(x), _fresh(layer, x))
    # 5. eval mode with gradients enabled still back-propagates into the weight
    layer.zero_grad()
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # 6. dtype change after caching
    with torch.no_grad():
        layer(x)
        layer.double()
        assert torch.equal(layer(x.double()), _fresh(layer, x.double()))


def test_optimizer_step_changes_eval_output_for_lifting():
    torch.manual_seed(9)
    layer = LiftingConv2d(1, 2, 3, "p4").eval()
    x = torch.randn(1, 1, 7, 7)
    with torch.no_grad():
        y0 = layer(x)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer.train()
    layer(x).sum().backward()
    opt.step()
    layer.eval()
    with torch.no_grad():
        assert (layer(x) - y0).abs().max() > 1e-3


# ----------------------------------------------------------------------------- initialisation
def _layer_gains(group, seed, init_std=None, depth=6, fields=8):
    """Per-layer gain E[y_l^2] / (2 E[x_l^2]) of a ReLU p4(m) CNN (x_l the layer input, y_l its output).

    For a fixed input and zero-mean weights of variance 2 / fan_in, circular padding and zero bias,
    E_w[y^2] = Var(w) * fan_in * E[x^2] = 2 E[x^2] exactly, so the gain has expectation 1 over the
    initialisation; since a ReLU of a symmetric variable keeps half its mean square, the mean square of
    the pre-activations is kept from layer to layer in expectation.  One network realisation fluctuates
    (its fields are few), so the test averages the gain over layers and seeds.
    """
    torch.manual_seed(seed)
    layers = [LiftingConv2d(4, fields, 3, group, padding=1, padding_mode="circular")]
    layers += [GroupConv2d(fields, fields, 3, group, padding=1, padding_mode="circular") for _ in range(depth - 1)]
    if init_std is not None:
        for layer in layers:
            torch.nn.init.normal_(layer.weight, std=init_std(layer.weight[0].numel()))
    x = torch.randn(4, 4, 9, 9)
    gains = []
    with torch.no_grad():
        for layer in layers:
            y = layer(x)
            gains.append(float(y.square().mean() / x.square().mean()) / 2)
            x = torch.relu(y)
    return gains


@pytest.mark.parametrize("group", GROUPS)
def test_initialisation_keeps_activation_scale_with_depth(group):
    gains = torch.tensor([_layer_gains(group, seed) for seed in range(4)])  # [seeds, layers]
    # 24 gains with standard deviation ~0.15 each: their mean is 1 +- 0.03
    assert 0.85 < float(gains.mean()) < 1.15, gains
    # controls: PyTorch's default scale (std = 1/sqrt(3 fan_in), gain 1/6) and twice He's std (gain 4)
    small = torch.tensor([_layer_gains(group, s, init_std=lambda f: (3 * f) ** -0.5) for s in range(4)])
    large = torch.tensor([_layer_gains(group, s, init_std=lambda f: 2 * (2 / f) ** 0.5) for s in range(4)])
    assert float(small.mean()) < 0.3 and float(large.mean()) > 3.0


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    lift = LiftingConv2d(3, 2, 3, "p4m")
    conv = GroupConv2d(2, 2, 3, "p4m")
    with pytest.raises(ValueError, match=r"in_channels=3"):
        lift(torch.randn(1, 2, 9, 9))
    with pytest.raises(ValueError, match=r"GroupConv2d"):
        lift(torch.randn(1, 3, 8, 9, 9))
    with pytest.raises(ValueError, match=r"\|G\|=8 for p4m"):
        conv(torch.randn(1, 2, 4, 9, 9))  # a p4 feature map
    with pytest.raises(ValueError, match=r"in_fields=2"):
        conv(torch.randn(1, 3, 8, 9, 9))
    with pytest.raises(ValueError, match=r"LiftingConv2d"):
        conv(torch.randn(1, 16, 9, 9))
    with pytest.raises(TypeError, match=r"floating-point"):
        lift(torch.ones(1, 3, 9, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"kernel_size must be odd"):
        GroupConv2d(2, 2, 4, "p4")
    with pytest.raises(ValueError, match=r"group must be 'p4' or 'p4m'"):
        LiftingConv2d(1, 1, 3, group="p6")
    with pytest.raises(ValueError, match=r"padding"):
        LiftingConv2d(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match=r"padding_mode"):
        LiftingConv2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"out_fields"):
        GroupConv2d(1, 0, 3)
    with pytest.raises(ValueError, match=r"smaller than the kernel"):
        lift(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"multiple of stride"):
        spatial_pool(torch.randn(1, 2, 8, 9, 9), 2, 2)
    with pytest.raises(ValueError, match=r"group feature map"):
        group_pool(torch.randn(1, 2, 9, 9))
    with pytest.raises(ValueError, match=r"group element"):
        transform_image(torch.randn(3, 3), 4, "p4")
