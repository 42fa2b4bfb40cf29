"""Tests of minequi.rigid.Rigid: group laws, from_3_points (AF2 Algorithm 21, OpenFold's order), validation."""
import pytest
import torch

from minequi.rigid import Rigid, rotation_tolerance
from minequi.testing import rand_orthogonal, rand_rotation

F64 = torch.float64
# Measured (float64): group-law and apply identities <= 1.8e-15, from_3_points orthonormality <= 4.5e-9
# (the eps = 1e-8 under OpenFold's square roots: |e|^2 = |v|^2 / (|v|^2 + eps)); exact-formula checks 0.
ATOL = 5e-13  # ~100x the largest measured error of the algebraic identities


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand_rigid(*shape, seed=0, scale=3.0):
    g = gen(seed)
    n = 1
    for d in shape:
        n *= d
    R = rand_rotation(n, generator=g).reshape(*shape, 3, 3)  # [..., 3, 3]
    t = scale * torch.randn(*shape, 3, generator=g, dtype=F64)  # [..., 3]
    return Rigid(R, t)


def close(a: Rigid, b: Rigid, atol=ATOL):
    return max(float((a.rotations - b.rotations).abs().max()), float((a.translations - b.translations).abs().max())) < atol


def test_group_laws_and_apply():
    T1, T2, T3 = rand_rigid(4, 5, seed=1), rand_rigid(4, 5, seed=2), rand_rigid(4, 5, seed=3)
    x = torch.randn(4, 5, 3, generator=gen(4), dtype=F64)  # [4, 5, 3]
    I = Rigid.identity((4, 5), dtype=F64)
    assert close(T1.compose(T1.inverse()), I) and close(T1.inverse().compose(T1), I)
    assert close(T1.compose(T2).compose(T3), T1.compose(T2.compose(T3)))  # associativity
    assert close(T1.compose(I), T1) and close(I.compose(T1), T1)
    # (T1 o T2) x = T1 (T2 x); inverse and invert_apply agree; apply = the row convention x @ R.T + t
    assert float((T1.compose(T2).apply(x) - T1.apply(T2.apply(x))).abs().max()) < ATOL
    assert float((T1.invert_apply(x) - T1.inverse().apply(x)).abs().max()) < ATOL
    assert float((T1.invert_apply(T1.apply(x)) - x).abs().max()) < ATOL
    row = (x[..., None, :] @ T1.rotations.transpose(-1, -2))[..., 0, :] + T1.translations  # [4, 5, 3]
    assert float((T1.apply(x) - row).abs().max()) < ATOL
    # negative control: composition does not commute
    assert not close(T1.compose(T2), T2.compose(T1), atol=1e-3)


def test_broadcasting_and_batch_bookkeeping():
    T = rand_rigid(6, seed=5)
    g = rand_rigid(seed=6)  # batch shape []
    gT = g.compose(T)
    assert gT.shape == (6,)
    x = torch.randn(6, 7, 3, generator=gen(7), dtype=F64)  # [6, 7, 3]: 7 points per frame
    y = T[..., None].apply(x)  # [6, 7, 3]
    assert y.shape == (6, 7, 3)
    assert float((y[2, 4] - T[2].apply(x[2, 4])).abs().max()) < ATOL
    assert float((gT.apply(x[:, 0]) - g.apply(T.apply(x[:, 0]))).abs().max()) < ATOL
    assert T[1:4].shape == (3,) and T[None].shape == (1, 6) and T.unsqueeze(-1).shape == (6, 1) and len(T) == 6
    assert close(Rigid.cat([T[:2], T[2:]], dim=0), T)
    S = Rigid.stack([T, T.inverse()], dim=0)
    assert S.shape == (2, 6) and close(S[1], T.inverse())
    T32 = T.to(torch.float32)
    assert T32.dtype == torch.float32 and T32.rotations.dtype == torch.float32 and T32.translations.dtype == torch.float32
    assert Rigid.identity((2, 3), dtype=torch.float32).shape == (2, 3)
    with pytest.raises(AttributeError):
        T.rotations = T.rotations  # immutable value
    with pytest.raises(ValueError, match="dim"):
        Rigid.cat([T, T], dim=1)


def test_validation_errors():
    R = rand_rotation(3, generator=gen(8))  # [3, 3, 3]
    t = torch.zeros(3, 3, dtype=F64)
    Rigid(R, t)  # fine
    with pytest.raises(ValueError, match="rotations must be orthogonal"):
        Rigid(R * 1.01, t)
    reflection = R.clone()
    reflection[1] = -reflection[1]  # det = -1 in frame 1
    with pytest.raises(ValueError, match=r"rotations must be proper rotations \(det = \+1\); frame 1"):
        Rigid(reflection, t)
    with pytest.raises(ValueError, match="rotations must be"):
        Rigid(rand_orthogonal(50, generator=gen(9)), torch.zeros(50, 3, dtype=F64))  # Haar O(3): some reflections
    Rigid(reflection, t, validate=False)  # skipping the check is possible (and then it is the caller's job)
    with pytest.raises(ValueError, match=r"rotations must have shape \[..., 3, 3\]"):
        Rigid(R[..., :2], t)
    with pytest.raises(ValueError, match=r"translations must have shape \[..., 3\]"):
        Rigid(R, t[:, :2])
    with pytest.raises(ValueError, match="batch shape"):
        Rigid(R, t[:2])
    with pytest.raises(TypeError, match="dtype"):
        Rigid(R, t.float())
    with pytest.raises(TypeError, match="tensors"):
        Rigid(R.tolist(), t)
    nan = R.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="orthogonal"):
        Rigid(nan, t)


def test_tolerance_scales_with_dtype():
    R = rand_rotation(generator=gen(10))
    bump = R + 1e-6 * torch.randn(3, 3, generator=gen(11), dtype=F64)  # 1e-6 off: float32 noise, not float64
    Rigid(bump.float(), torch.zeros(3))  # within sqrt(eps_float32) = 3.5e-4
    with pytest.raises(ValueError, match="orthogonal"):
        Rigid(bump, torch.zeros(3, dtype=F64))  # outside sqrt(eps_float64) = 1.5e-8
    assert rotation_tolerance(F64) < 2e-8 < 1e-4 < rotation_tolerance(torch.float32) < 1e-3
    Rigid(rand_rotation(100, dtype=torch.float32, generator=gen(12)), torch.zeros(100, 3))  # float32 rotations pass


def backbone(n=20, seed=0):
    """Random N, CA, C triples with realistic bond lengths (~1.46, 1.52 A) and angle (~111 degrees)."""
    g = gen(seed)
    ca = 10 * torch.randn(n, 3, generator=g, dtype=F64)  # [n, 3]
    R = rand_rotation(n, generator=g)  # [n, 3, 3]
    ang = torch.tensor(111.0 * torch.pi / 180, dtype=F64)
    n_loc = torch.stack([1.46 * torch.cos(ang), 1.46 * torch.sin(ang), torch.tensor(0.0, dtype=F64)])  # [3]
    c_loc = torch.tensor([1.52, 0.0, 0.0], dtype=F64)  # [3]
    return ca + R @ n_loc, ca, ca + R @ c_loc  # 3 x [n, 3]


@pytest.mark.parametrize("eps, tol", [(0.0, ATOL), (1e-8, 3e-7)])  # default eps: errors 2.6e-9 (eps-limited)
def test_from_3_points_geometry(eps, tol):
    n, ca, c = backbone()
    T = Rigid.from_3_points(p_neg_x_axis=n, origin=ca, p_xy_plane=c, eps=eps)
    R = T.rotations
    assert float((R.transpose(-1, -2) @ R - torch.eye(3, dtype=F64)).abs().max()) < tol
    assert float((torch.linalg.det(R) - 1).abs().max()) < tol  # right-handed
    Rigid(R, T.translations)  # and it passes the constructor's own check
    n_loc, ca_loc, c_loc = T.invert_apply(n), T.invert_apply(ca), T.invert_apply(c)
    assert float(ca_loc.abs().max()) < tol  # CA at the origin
    assert float(n_loc[:, 1:].abs().max()) < tol and bool((n_loc[:, 0] < 0).all())  # N on the negative x axis
    assert float(c_loc[:, 2].abs().max()) < tol and bool((c_loc[:, 1] > 0).all())  # C in the xy plane, y > 0
    # equivariance: the frames of rotated and translated atoms are the moved frames
    g = Rigid(rand_rotation(generator=gen(13)), torch.randn(3, generator=gen(14), dtype=F64))
    Tg = Rigid.from_3_points(g.apply(n), g.apply(ca), g.apply(c), eps=eps)
    assert close(Tg, g.compose(T))
    # negative control: a mirror image cannot be represented; its frames are not the mirrored frames
    M = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64))
    Tm = Rigid.from_3_points(n @ M, ca @ M, c @ M, eps=eps)
    assert float((Tm.rotations - M @ R).abs().max()) > 0.1


def alg21(x1, x2, x3):
    """AF2 supplement Algorithm 21 as printed: rigidFrom3Points(x1, x2, x3)."""
    v1, v2 = x3 - x2, x1 - x2
    e1 = v1 / v1.norm(dim=-1, keepdim=True)
    u2 = v2 - e1 * (e1 * v2).sum(-1, keepdim=True)
    e2 = u2 / u2.norm(dim=-1, keepdim=True)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    return torch.stack([e1, e2, e3], dim=-1), x2


def test_from_3_points_matches_openfold_formula_and_alg21():
    n, ca, c = backbone(seed=1)
    # OpenFold's component-wise formula (openfold/utils/rigid_utils.py, Rigid.from_3_points), written out
    eps = 1e-8
    e0 = ca - n
    e0 = e0 / torch.sqrt((e0 * e0).sum(-1, keepdim=True) + eps)
    e1 = c - ca
    e1 = e1 - e0 * (e0 * e1).sum(-1, keepdim=True)
    e1 = e1 / torch.sqrt((e1 * e1).sum(-1, keepdim=True) + eps)
    e2 = torch.linalg.cross(e0, e1, dim=-1)
    T = Rigid.from_3_points(n, ca, c)
    assert float((T.rotations - torch.stack([e0, e1, e2], dim=-1)).abs().max()) < ATOL
    assert float((T.translations - ca).abs().max()) == 0.0
    # AlphaFold's backbone frame: from_3_points(C, CA, N) then diag(-1, 1, -1) = Algorithm 21 on (N, CA, C)
    flip = Rigid(torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=F64)), torch.zeros(3, dtype=F64))
    af2 = Rigid.from_3_points(c, ca, n).compose(flip)
    R21, t21 = alg21(n, ca, c)
    assert float((af2.rotations - R21).abs().max()) < 1e-8 and float((af2.translations - t21).abs().max()) == 0.0
    # negative control: without the flip (or with the other atom order) it is a different frame
    assert float((Rigid.from_3_points(c, ca, n).rotations - R21).abs().max()) > 0.5
    assert float((T.rotations - R21).abs().max()) > 0.5


def test_from_3_points_degenerate_and_errors():
    n, ca, c = backbone(3, seed=2)
    with pytest.raises(ValueError, match="p_xy_plane lies on the line.*frame 1"):
        c2 = c.clone()
        c2[1] = ca[1] + 2.0 * (ca[1] - n[1])  # collinear with N and CA
        Rigid.from_3_points(n, ca, c2)
    with pytest.raises(ValueError, match="p_neg_x_axis and origin coincide"):
        Rigid.from_3_points(ca, ca, c)
    Rigid.from_3_points(ca, ca, c, validate=False)  # OpenFold's silent behaviour when asked for
    with pytest.raises(ValueError, match="p_xy_plane must have the shape"):
        Rigid.from_3_points(n, ca, c[:, :2])
    with pytest.raises(TypeError, match="origin must be a floating-point tensor"):
        Rigid.from_3_points(n, ca.long(), c)


def test_from_3_points_gradcheck():
    n, ca, c = (p[:2].clone().requires_grad_() for p in backbone(2, seed=3))

    def f(n, ca, c):
        T = Rigid.from_3_points(n, ca, c, validate=False)
        return T.rotations, T.translations

    assert torch.autograd.gradcheck(f, (n, ca, c))
