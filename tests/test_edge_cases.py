"""Bad and edge inputs of the public API (issue 8, "Library reliability").

One test per item of the issue.  Each of them failed on the library as it was before the fix
(checked by running this file against a copy of the old ``minequi/``) and passes now.  The
equivariance checks use :mod:`minequi.testing` in float64 under Haar-random O(3) elements, print
the measured error, use a tolerance about 100x above it, and come with a negative control.
"""
import math
import time

import pytest
import torch

from minequi import (Gate, GroupConv2d, GroupPool, LiftingConv2d, Linear, SpatialPool2d,
                     spatial_pool, spherical_harmonics, wigner_D)
from minequi.testing import equivariance_error, haar_o3, rand_rotation

F64 = torch.float64


# ----------------------------------------------------------------------------- spherical harmonics
@pytest.mark.parametrize("dtype, value", [(F64, 1e-300), (F64, 1e200), (F64, 4.9e-324),
                                          (torch.float32, 1e-25), (torch.float32, 1e20),
                                          (torch.float32, 3e38)])
def test_sh_tiny_and_huge_coordinates_are_unit_norm(dtype, value):
    """|x|^2 under/overflows there; the harmonics of the direction must not care."""
    x = torch.tensor([[value, value, value], [value, 0.0, 0.0], [0.0, -value, 0.0]], dtype=dtype)
    ls = [0, 1, 2, 3]
    y = spherical_harmonics(ls, x)
    ref = spherical_harmonics(ls, torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, -1, 0]], dtype=F64))
    eps = torch.finfo(dtype).eps
    assert (y.double() - ref).abs().max() < 10 * eps * 7  # |Y| <= sqrt(2l+1)
    sq = y.double().pow(2).reshape(3, -1)
    assert (sq[:, 1:4].sum(-1) - 3).abs().max() < 10 * eps


def test_sh_inf_or_nan_coordinate_gives_an_all_nan_row():
    x = torch.tensor([[math.inf, 1.0, 0.0], [0.0, -math.inf, 2.0], [math.nan, 0.0, 0.0],
                      [1.0, 2.0, 3.0]], dtype=F64)
    y = spherical_harmonics([0, 1, 2, 3], x)
    assert torch.isnan(y[:3]).all()  # every component, l = 0 included
    assert torch.isfinite(y[3]).all()
    assert torch.equal(y[3], spherical_harmonics([0, 1, 2, 3], x[3:])[0])


@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
def test_sh_value_and_gradient_at_the_origin(normalization):
    """At x = 0: the l = 0 constant, zeros for l >= 1, and a zero Jacobian for every l.

    Equivariance forces Y^l(0) = 0 for l >= 1 and a Jacobian with J = D^l(R) J R^T for all R:
    J = 0 for l != 1 (Schur), J = c I for l = 1; J = 0 is the one choice that fits every l.
    The old code had J = diag(sqrt 3, 0, sqrt 3) for l = 1 (only the m = 0 row masked).
    """
    ls = [0, 1, 2, 3, 4]
    x0 = torch.zeros(3, dtype=F64)
    y = spherical_harmonics(ls, x0, normalization=normalization)
    c = spherical_harmonics(0, torch.ones(3, dtype=F64), normalization=normalization)
    assert torch.equal(y[:1], c) and torch.equal(y[1:], torch.zeros(24, dtype=F64))
    J = torch.autograd.functional.jacobian(lambda v: spherical_harmonics(ls, v, normalization=normalization), x0)
    assert torch.equal(J, torch.zeros(25, 3, dtype=F64)), J
    # a zero row among others: the other rows' gradients are untouched
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    x[2] = 0
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(spherical_harmonics(ls, x).pow(2).sum() + spherical_harmonics(ls, x).sum(), x)
    xk = x.detach()[[0, 1, 3]].requires_grad_(True)
    (gk,) = torch.autograd.grad(spherical_harmonics(ls, xk).pow(2).sum() + spherical_harmonics(ls, xk).sum(), xk)
    assert torch.equal(g[2], torch.zeros(3, dtype=F64))
    assert (g[[0, 1, 3]] - gk).abs().max() < 1e-14


def _energy(pos, sh):
    """An invariant energy of a point cloud from harmonics of *all* relative vectors x_j - x_i
    (self-loops and coincident pairs included), with a per-atom 'species' weight."""
    n = pos.shape[0]
    rel = pos[None, :, :] - pos[:, None, :]  # [N, N, 3]
    Y = sh(rel)  # [N, N, d]
    w = torch.linspace(0.5, 1.5, n, dtype=pos.dtype)  # [N], per source atom
    A = (w[None, :, None] * Y * torch.exp(-rel.pow(2).sum(-1, keepdim=True))).sum(1)  # [N, d]
    return A.pow(2).sum() + A[:, 0].sum()


def _forces(sh):
    def forces(pos):
        pos = pos.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(_energy(pos, sh), pos)
        return -g  # [N, 3]
    return forces


def _coincident_cloud():
    pos = 0.6 * torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(1))  # neighbours within ~1
    pos[4] = pos[1]  # a coincident pair
    return pos


def _force_error(sh):
    return equivariance_error(_forces(sh), _coincident_cloud(), haar_o3, act_in=lambda Q, x: x @ Q.T,
                              act_out=lambda Q, f: f @ Q.T, n_samples=16)


def test_forces_equivariant_with_a_coincident_pair():
    """F(x Q^T) = F(x) Q^T under Haar O(3), with two atoms at the same place (measured ~1e-14)."""
    err = _force_error(lambda v: spherical_harmonics([0, 1, 2], v))
    generic = equivariance_error(_forces(lambda v: spherical_harmonics([0, 1, 2], v)),
                                 0.6 * torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(1)),
                                 haar_o3, act_in=lambda Q, x: x @ Q.T, act_out=lambda Q, f: f @ Q.T, n_samples=16)
    print(f"force equivariance error: coincident pair {err:.1e}, generic positions {generic:.1e}")
    assert err < 1e-12 and generic < 1e-12


def test_forces_negative_control_old_gradient_at_origin():
    """The old harmonics (only the m = 0 row masked at 0, so dY^1/dx = diag(sqrt3, 0, sqrt3)
    there) break force equivariance for the same cloud: the check above can fail."""
    def sh_old(v):
        r = v.norm(dim=-1, keepdim=True)
        nz = (r > 0).to(v.dtype)
        y1 = math.sqrt(3) * v / torch.where(r > 0, r, 1.0)
        y1 = torch.cat([y1[..., :1], y1[..., 1:2] * nz, y1[..., 2:]], -1)
        return torch.cat([torch.ones_like(r), y1], -1)

    x = torch.randn(5, 3, dtype=F64)
    assert (sh_old(x) - spherical_harmonics([0, 1], x)).abs().max() < 1e-14  # same values away from 0
    err = _force_error(sh_old)
    print(f"force equivariance error with the old gradient at 0: {err:.1e}")
    assert err > 1e-3


# ----------------------------------------------------------------------------- layers
@pytest.mark.parametrize("which", ["act_scalars", "act_gates"])
def test_gate_given_a_string_says_so(which):
    acts = {"act_scalars": torch.relu, "act_gates": torch.sigmoid}
    acts[which] = "relu"
    with pytest.raises(TypeError, match=rf"{which} must be a callable .* got the string 'relu'"):
        Gate("4x0e", acts["act_scalars"], "2x0e", acts["act_gates"], "1x1o+1x2e")
    with pytest.raises(TypeError, match=r"act_scalars must contain callables, got 'relu' of type str"):
        Gate("4x0e", ["relu"], "2x0e", torch.sigmoid, "1x1o+1x2e")


def test_linear_and_gate_given_an_integer_tensor():
    lin = Linear("2x0e+1x1o", "1x0e+1x1o")
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor, got dtype torch.int64"):
        lin(torch.ones(3, 5, dtype=torch.int64))
    gate = Gate("1x0e", torch.relu, "1x0e", torch.sigmoid, "1x1o")
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor, got dtype torch.int32"):
        gate(torch.ones(3, 5, dtype=torch.int32))


def test_module_and_input_dtypes_must_match():
    """The rule: a module's parameters must match the input's dtype; a mismatch is a TypeError naming both."""
    cases = [
        (LiftingConv2d(1, 2, 3, group="p4", padding=1), torch.randn(1, 1, 5, 5, dtype=F64)),
        (GroupConv2d(1, 2, 3, group="p4m", padding=1), torch.randn(1, 1, 8, 5, 5, dtype=F64)),
        (Linear("2x0e+1x1o", "1x0e+1x1o"), torch.randn(3, 5, dtype=F64)),
    ]
    for module, x in cases:
        name = type(module).__name__
        with pytest.raises(TypeError, match=rf"{name}: .*torch.float64.* parameters are torch.float32"):
            module(x)
        assert module.double()(x).dtype == F64  # matching dtypes work
        with pytest.raises(TypeError, match=r"torch.float32.* parameters are torch.float64"):
            module(x.float())


@pytest.mark.parametrize("padding, error, match", [
    (-1, ValueError, r"padding must satisfy 0 <= padding <= kernel_size // 2 = 1, got -1"),
    (2, ValueError, r"padding must satisfy .* got 2"),
    ("same", TypeError, r"padding must be an int .* got 'same'"),
    (1.5, TypeError, r"padding must be an int .* got 1\.5"),
    (True, TypeError, r"padding must be an int"),
])
def test_spatial_pool_bad_padding(padding, error, match):
    x = torch.randn(1, 2, 4, 9, 9)
    with pytest.raises(error, match=match):
        spatial_pool(x, 3, 1, padding=padding)
    with pytest.raises(error, match=match):
        SpatialPool2d(3, 1, padding=padding)  # checked when the module is built


def test_pools_on_an_empty_batch():
    for reduce in ("max", "mean"):
        assert spatial_pool(torch.randn(0, 2, 4, 9, 9), 3, 2, reduce=reduce).shape == (0, 2, 4, 4, 4)
        assert spatial_pool(torch.randn(0, 2, 9, 9), 3, 2, reduce=reduce).shape == (0, 2, 4, 4)
        assert SpatialPool2d(3, 2, 1, reduce)(torch.randn(0, 3, 8, 7, 7)).shape == (0, 3, 8, 4, 4)
        assert GroupPool(reduce)(torch.randn(0, 3, 8, 7, 7)).shape == (0, 3, 7, 7)
    layer = GroupConv2d(2, 3, 3, group="p4", padding=1)
    assert layer(torch.randn(0, 2, 4, 6, 6)).shape == (0, 3, 4, 6, 6)


# ----------------------------------------------------------------------------- wigner_D
def test_wigner_D_absurd_l_is_refused_before_allocating():
    import minequi.so3 as so3

    cap = getattr(so3, "GENERATORS_LMAX", 1000)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"l = 100000 is above the supported maximum {cap}: .* GiB"):
        wigner_D(100_000, torch.eye(3, dtype=F64))  # the old code tried to allocate ~600 GB
    with pytest.raises(ValueError, match=rf"l = {cap + 1} is above the supported maximum {cap}"):
        so3.so3_generators(cap + 1)
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_wigner_D_half_precision(dtype, tol):
    """16-bit rotations are checked and computed in float32 and rounded back (measured errors
    4e-4 and 5e-3 against float64 for l = 2); 1.3 x identity is not orthogonal."""
    R = rand_rotation(16, generator=torch.Generator().manual_seed(0))  # float64
    for l in (1, 2, 3):
        D = wigner_D(l, R.to(dtype))
        assert D.dtype == dtype and D.shape == (16, 2 * l + 1, 2 * l + 1)
        err = float((D.double() - wigner_D(l, R)).abs().max())
        print(f"{dtype} l={l}: max |D - D_float64| = {err:.1e}")
        assert err < tol
    for bad in (1.3 * torch.eye(3), 1.02 * torch.eye(3) if dtype == torch.float16 else 1.1 * torch.eye(3)):
        with pytest.raises(ValueError, match=rf"R must be orthogonal .* \(the tolerance for {dtype}\)"):
            wigner_D(1, bad.to(dtype))
    with pytest.raises(ValueError, match=r"det = -1"):
        wigner_D(1, -torch.eye(3, dtype=dtype))


def test_wigner_D_validate_false_skips_only_the_value_check():
    R = rand_rotation(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(wigner_D(2, R, validate=False), wigner_D(2, R))
    wigner_D(1, 2 * R, validate=False)  # values unchecked: garbage in, garbage out, no error
    with pytest.raises(ValueError, match=r"R must have shape \[\.\.\., 3, 3\]"):
        wigner_D(1, torch.zeros(3, 4, dtype=F64), validate=False)
    with pytest.raises(TypeError, match=r"floating-point"):
        wigner_D(1, torch.eye(3, dtype=torch.int64), validate=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_no_host_synchronisation_on_cuda():
    """spherical_harmonics (and its gradient) and wigner_D(validate=False) never wait for the GPU."""
    x = torch.randn(100, 3, device="cuda", dtype=F64)
    x[3] = 0
    R = rand_rotation(4, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = spherical_harmonics([0, 1, 2, 3], x)
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(spherical_harmonics([0, 1, 2], xg).sum(), xg)
        D = wigner_D(2, R, validate=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(y.cpu(), spherical_harmonics([0, 1, 2, 3], x.cpu()))
    assert torch.equal(g[3].cpu(), torch.zeros(3, dtype=F64))
    assert (D.cpu() - wigner_D(2, R.cpu())).abs().max() < 1e-12


# ============================================================================= the new API (issues 11-13)
# Each case below names the argument in its message.  The ones marked "fixed" raised a cryptic
# error (einsum/IndexError/AttributeError/NotImplementedError) or returned silently before the
# audit of this section; the others pin the behaviour the book's table promises.
from minequi.forces import energy_forces_stress  # noqa: E402
from minequi.graph import scatter_softmax  # noqa: E402
from minequi.ipa import InvariantPointAttention  # noqa: E402
from minequi.neighbor_list import batched_neighbor_list, neighbor_list  # noqa: E402
from minequi.rigid import Rigid  # noqa: E402


def _frames(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Rigid(rand_rotation(n, generator=g), torch.randn(n, 3, generator=g, dtype=F64))


def _ipa():
    torch.manual_seed(0)
    return InvariantPointAttention(8, 4, 6, 2, 3, 2, zero_init_out=False).double()


def _ipa_inputs(n=5):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(n, 8, generator=g, dtype=F64), torch.randn(n, n, 4, generator=g, dtype=F64),
            _frames(n, seed=4))


_POS = 3 * torch.rand(6, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
_CELL = 3 * torch.eye(3, dtype=F64)


def _sq(p, c):
    return (p ** 2).sum()


_NEW_API_BAD = [
    # Rigid
    ("Rigid rotations [4, 3]", lambda: Rigid(_frames().rotations[:, 0], _frames().translations),
     ValueError, r"rotations must have shape \[\.\.\., 3, 3\]"),
    ("Rigid reflection", lambda: Rigid(-_frames().rotations, _frames().translations),
     ValueError, r"rotations must be proper rotations \(det = \+1\)"),
    ("Rigid float32 and float64", lambda: Rigid(_frames().rotations, _frames().translations.float()),
     TypeError, r"rotations and translations must share one floating dtype"),
    ("Rigid NaN translation (fixed)", lambda: Rigid(_frames().rotations, torch.full((4, 3), math.nan, dtype=F64)),
     ValueError, r"translations must be finite"),
    ("Rigid inf translation (fixed)", lambda: Rigid(torch.eye(3, dtype=F64), torch.tensor([0, math.inf, 0], dtype=F64)),
     ValueError, r"translations must be finite"),
    ("Rigid.apply points [4, 2] (fixed)", lambda: _frames().apply(torch.zeros(4, 2, dtype=F64)),
     ValueError, r"Rigid.apply: points must have shape \[\.\.\., 3\]"),
    ("Rigid.apply batch [5] vs [4] (fixed)", lambda: _frames().apply(torch.zeros(5, 3, dtype=F64)),
     ValueError, r"Rigid.apply: the batch shape of points \[5\] does not broadcast with the frames' batch shape \[4\]"),
    ("Rigid.apply float32 points (fixed)", lambda: _frames().apply(torch.zeros(4, 3)),
     TypeError, r"Rigid.apply: points are torch.float32 .* frames are torch.float64"),
    ("Rigid.invert_apply int points (fixed)", lambda: _frames().invert_apply(torch.zeros(4, 3, dtype=torch.long)),
     TypeError, r"Rigid.invert_apply: points are torch.int64"),
    ("Rigid.compose shapes [4] and [3] (fixed)", lambda: _frames().compose(_frames(3)),
     ValueError, r"Rigid.compose: the batch shape of other \[3\] does not broadcast"),
    ("Rigid.compose dtypes (fixed)", lambda: _frames().compose(_frames().to(torch.float32)),
     TypeError, r"Rigid.compose: other is torch.float32"),
    ("Rigid.cat [] (fixed)", lambda: Rigid.cat([]), TypeError, r"Rigid.cat: rigids must be a non-empty sequence"),
    ("Rigid.cat a tensor (fixed)", lambda: Rigid.cat([_frames(), torch.eye(3)]),
     TypeError, r"Rigid.cat: rigids must be a non-empty sequence of Rigid"),
    ("Rigid.cat float64 + float32 (fixed: was promoted)", lambda: Rigid.cat([_frames(), _frames().to(torch.float32)]),
     TypeError, r"Rigid.cat: rigids must share one dtype"),
    ("Rigid.stack shapes [4], [2] (fixed)", lambda: Rigid.stack([_frames(), _frames()[:2]]),
     ValueError, r"Rigid.stack: rigids must share one batch shape"),
    ("Rigid.identity((-1,)) (fixed)", lambda: Rigid.identity((-1,)), ValueError, r"Rigid.identity: shape must be"),
    ("Rigid.identity((2.0,)) (fixed)", lambda: Rigid.identity((2.0,)), ValueError, r"Rigid.identity: shape must be"),
    ("Rigid[7] of batch shape [4] (fixed message)", lambda: _frames()[7], IndexError, r"batch shape \[4\]"),
    ("from_3_points NaN (fixed message)", lambda: Rigid.from_3_points(
        torch.tensor([math.nan, 0, 0]), torch.zeros(3), torch.tensor([0.0, 1, 0])), ValueError, r"must be finite"),
    ("from_3_points float64 + float32 (fixed)", lambda: Rigid.from_3_points(
        torch.tensor([-1.0, 0, 0], dtype=F64), torch.zeros(3), torch.tensor([0.0, 1, 0])),
     TypeError, r"p_neg_x_axis is torch.float64 .* origin is torch.float32"),
    ("from_3_points collinear", lambda: Rigid.from_3_points(
        torch.tensor([-1.0, 0, 0]), torch.zeros(3), torch.tensor([2.0, 0, 0])), ValueError, r"p_xy_plane lies on the line"),
    # InvariantPointAttention
    ("IPA inf < 0 (fixed)", lambda: InvariantPointAttention(8, 4, 6, 2, 3, 2, inf=-1e5),
     ValueError, r"inf must be a positive finite number"),
    ("IPA eps < 0 (fixed)", lambda: InvariantPointAttention(8, 4, 6, 2, 3, 2, eps=-1.0),
     ValueError, r"eps must be a non-negative finite number"),
    ("IPA c_s = 0", lambda: InvariantPointAttention(0, 4, 6, 2, 3, 2), ValueError, r"c_s must be a positive int"),
    ("IPA z [N, N-1, c_z]", lambda: _ipa()(_ipa_inputs()[0], _ipa_inputs()[1][:, :4], _ipa_inputs()[2]),
     ValueError, r"z must have shape \[\.\.\., N, N, c_z\] = \[5, 5, 4\]"),
    ("IPA frames [4] for N = 5", lambda: _ipa()(*_ipa_inputs()[:2], _ipa_inputs()[2][:4]),
     ValueError, r"frames must have batch shape \[\.\.\., N\] = \[5\]"),
    ("IPA mask [N + 1]", lambda: _ipa()(*_ipa_inputs(), torch.ones(6, dtype=torch.bool)),
     ValueError, r"mask must be a \[\.\.\., N\] = \[5\] tensor"),
    ("IPA int mask", lambda: _ipa()(*_ipa_inputs(), torch.ones(5, dtype=torch.long)),
     TypeError, r"mask must be bool or floating"),
    ("IPA float32 z, float64 module", lambda: _ipa()(_ipa_inputs()[0], _ipa_inputs()[1].float(), _ipa_inputs()[2]),
     TypeError, r"z is torch.float32 .* parameters are torch.float64"),
    # neighbor_list, batched_neighbor_list
    ("neighbor_list cutoff < 0", lambda: neighbor_list(_POS, -1.0), ValueError, r"cutoff must be a positive finite"),
    ("neighbor_list NaN pos", lambda: neighbor_list(torch.full((2, 3), math.nan, dtype=F64), 1.0),
     ValueError, r"pos must be finite"),
    ("neighbor_list singular cell", lambda: neighbor_list(_POS, 1.0, torch.tensor(
        [[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1]], dtype=F64), pbc=True), ValueError, r"cell is singular"),
    ("neighbor_list pbc [2]", lambda: neighbor_list(_POS, 1.0, _CELL, pbc=[True, True]),
     ValueError, r"pbc must have shape \[3\]"),
    ("neighbor_list pbc [2, 1, 1]", lambda: neighbor_list(_POS, 1.0, _CELL, pbc=[2, 1, 1]),
     TypeError, r"pbc must be a bool or booleans"),
    ("neighbor_list pbc without cell", lambda: neighbor_list(_POS, 1.0, pbc=True), ValueError, r"needs a cell"),
    ("batched_neighbor_list batch >= G", lambda: batched_neighbor_list(
        _POS, 1.0, _CELL[None], batch=torch.tensor([0, 0, 0, 1, 1, 1])), ValueError, r"batch has index 1 .* G = 1"),
    ("batched_neighbor_list cell [3, 3]", lambda: batched_neighbor_list(_POS, 1.0, _CELL),
     ValueError, r"cell must have shape \[G, 3, 3\]"),
    # energy_forces_stress
    ("efs pbc [2] (fixed: was accepted)", lambda: energy_forces_stress(_sq, _POS, _CELL, pbc=[True, True]),
     ValueError, r"pbc must be a bool or have shape \[3\]"),
    ("efs pbc 'yes' (fixed message)", lambda: energy_forces_stress(_sq, _POS, _CELL, pbc="yes"),
     TypeError, r"pbc must be a bool"),
    ("efs batch >= G (fixed)", lambda: energy_forces_stress(
        lambda p, c: p.sum(1)[:2], _POS, _CELL.expand(2, 3, 3), batch=torch.tensor([0, 0, 0, 2, 2, 2])),
     ValueError, r"batch holds structure index 2 but cell \[G, 3, 3\] has only G = 2"),
    ("efs [3, 3] cell with batch", lambda: energy_forces_stress(
        lambda p, c: p.sum()[None], _POS, _CELL, batch=torch.zeros(6, dtype=torch.long)),
     ValueError, r"cell must have shape \[G, 3, 3\]"),
    ("efs vector energy without batch", lambda: energy_forces_stress(lambda p, c: p.sum(1), _POS),
     ValueError, r"energy_fn must return a scalar energy"),
    ("efs singular cell with stress", lambda: energy_forces_stress(
        _sq, _POS, torch.zeros(3, 3, dtype=F64), compute_stress=True), ValueError, r"non-singular cell"),
    # scatter_softmax
    ("scatter_softmax float index", lambda: scatter_softmax(torch.zeros(3), torch.zeros(3), 1),
     TypeError, r"index must be an integer tensor"),
    ("scatter_softmax index [E, 1]", lambda: scatter_softmax(torch.zeros(3), torch.zeros(3, 1, dtype=torch.long), 1),
     ValueError, r"index must have shape \[E\] = \[3\]"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in _NEW_API_BAD], ids=[c[0] for c in _NEW_API_BAD])
def test_new_api_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_rigid_half_precision_is_validated_in_float32():
    """float16 frames used to fail with 'lu_cpu not implemented for Half' in the check."""
    R, t = _frames().rotations, _frames().translations
    for dtype in (torch.float16, torch.bfloat16):
        T = Rigid(R.to(dtype), t.to(dtype))  # passes: rounding is far below sqrt(eps) of the dtype
        assert T.dtype == dtype
        with pytest.raises(ValueError, match=r"orthogonal .*\(the tolerance of " + str(dtype)):
            Rigid((1.3 * R).to(dtype), t.to(dtype))
        with pytest.raises(ValueError, match=r"det = \+1"):
            Rigid((-R).to(dtype), t.to(dtype))


def test_rigid_identity_of_an_int_shape():
    """Rigid.identity(5) used to fail with "'int' object is not iterable"; it is Rigid.identity((5,))."""
    T = Rigid.identity(5, dtype=F64)
    assert T.shape == (5,) and torch.equal(T.rotations, torch.eye(3, dtype=F64).expand(5, 3, 3))
    assert Rigid.identity((), dtype=F64).shape == ()


def test_ipa_float_mask_reads_nonzero_as_present():
    """A float mask is 0 = absent, nonzero = present.  The old bias (mask - 1) * inf turned a
    mask value of 2 into +1e5 on that key's logit (all attention on it); 0/1 masks are unchanged."""
    ipa, (s, z, frames) = _ipa(), _ipa_inputs()
    ref = ipa(s, z, frames)
    mask01 = torch.tensor([1.0, 1, 0, 1, 1], dtype=F64)
    assert torch.equal(ipa(s, z, frames, mask01), ipa(s, z, frames, mask01.bool()))
    odd = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0], dtype=F64)  # all present
    err = float((ipa(s, z, frames, odd) - ref).detach().abs().max())
    print(f"float mask with values 2 and 0.5 vs no mask: {err:.1e}")
    assert err < 1e-12
    # negative control: the old formula gives key 1 a +1e5 logit and changes the output
    q = torch.randn(5, 5, dtype=F64)
    old = torch.softmax(q + ((odd - 1.0) * ipa.inf)[None, :], dim=-1)
    assert float((old - torch.softmax(q, dim=-1)).abs().max()) > 0.5


def test_neighbor_list_zero_dim_pbc_is_a_bool():
    """numpy.bool_(True) or torch.tensor(True) as pbc used to fail 'pbc must have shape [3], got []'."""
    import numpy as np

    ref = neighbor_list(_POS, 2.5, _CELL, pbc=True)  # 68 edges (26 without the images)
    for flag in (np.bool_(True), torch.tensor(True)):
        out = neighbor_list(_POS, 2.5, _CELL, pbc=flag)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    free = neighbor_list(_POS, 2.5, _CELL, pbc=False)
    assert torch.equal(neighbor_list(_POS, 2.5, _CELL, pbc=np.bool_(False))[0], free[0])
    assert free[0].shape[1] < ref[0].shape[1]


@pytest.mark.parametrize("what", ["ipa N=0", "ipa batch 0", "neighbor_list N=0", "batched N=0",
                                  "forces N=0 with stress", "scatter_softmax E=0"])
def test_new_api_empty_inputs(what):
    if what == "ipa N=0":
        s, z, fr = _ipa_inputs()
        assert _ipa()(s[:0], z[:0, :0], fr[:0]).shape == (0, 8)
    elif what == "ipa batch 0":
        s, z, fr = _ipa_inputs()
        frames = Rigid(fr.rotations.expand(0, 5, 3, 3), fr.translations.expand(0, 5, 3))
        assert _ipa()(s.expand(0, 5, 8), z.expand(0, 5, 5, 4), frames).shape == (0, 5, 8)
    elif what == "neighbor_list N=0":
        ei, S = neighbor_list(_POS[:0], 1.0, _CELL, pbc=True)
        assert ei.shape == (2, 0) and S.shape == (0, 3) and S.dtype == F64
    elif what == "batched N=0":
        ei, S = batched_neighbor_list(_POS[:0], 1.0, _CELL.expand(2, 3, 3), batch=torch.zeros(0, dtype=torch.long))
        assert ei.shape == (2, 0) and S.shape == (0, 3)
    elif what == "forces N=0 with stress":
        E, F, sigma = energy_forces_stress(lambda p, c: p.sum() + 0.0 * c.sum(), _POS[:0], _CELL)
        assert F.shape == (0, 3) and torch.equal(sigma, torch.zeros(3, 3, dtype=F64))
    else:
        assert scatter_softmax(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3).shape == (0, 2)
