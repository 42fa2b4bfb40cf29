"""Tests of minequi.ipa.InvariantPointAttention (AF2 supplement Algorithm 22).

Every check uses random weights everywhere (``zero_init_out=False``, random head weights and
biases): with AF2's zero-initialised output layer the module returns 0 and any invariance test
would pass trivially (``test_zero_init_out`` checks that this is so).
"""
import math

import pytest
import torch
from torch import nn

from minequi.ipa import InvariantPointAttention
from minequi.rigid import Rigid
from minequi.testing import equivariance_report, haar_so3, permutation_sampler, rand_rotation

F64 = torch.float64
C_S, C_Z, C, H, PQ, PV = 10, 6, 5, 3, 4, 2
# Measured (float64, N = 9, frame translations of scale 1, global translations of scale 10): invariance
# under global rigid motions <= 3.6e-15, permutation equivariance 1.3e-15, the loop reference 1.0e-15,
# masked residues changed 8.9e-16, frames from rotated atoms 1.4e-15.
INV_ATOL = 4e-13  # ~100x the measured invariance error
EXACT_ATOL = 2e-13  # ~100x the measured differences between two evaluations of the same formula


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make_ipa(seed=0, **kw):
    torch.manual_seed(seed)
    ipa = InvariantPointAttention(C_S, C_Z, C, H, PQ, PV, zero_init_out=False, **kw).double()
    with torch.no_grad():  # biases and head weights random too, so that every term is exercised
        for m in ipa.modules():
            if isinstance(m, nn.Linear):
                m.bias.normal_(0.0, 0.5)
        ipa.head_weights.normal_(0.5, 0.5)
    return ipa


def inputs(*lead, n=9, seed=1, scale=1.0):
    g = gen(seed)
    s = torch.randn(*lead, n, C_S, generator=g, dtype=F64)  # [*, N, c_s]
    z = torch.randn(*lead, n, n, C_Z, generator=g, dtype=F64)  # [*, N, N, c_z]
    m = 1
    for d in lead:
        m *= d
    R = rand_rotation(m * n, generator=g).reshape(*lead, n, 3, 3)  # [*, N, 3, 3]
    t = scale * torch.randn(*lead, n, 3, generator=g, dtype=F64)  # [*, N, 3]
    mask = torch.rand(*lead, n, generator=g) > 0.3  # [*, N]
    mask[..., 0], mask[..., 1] = True, False  # at least one present and one masked residue
    return s, z, R, t, mask


def reference_ipa(ipa, s, z, R, t, mask):
    """Algorithm 22 line by line, one residue pair and head at a time, for one structure ([N, ...])."""
    N = s.shape[0]
    wL, wC = math.sqrt(1 / 3), math.sqrt(2 / (9 * PQ))
    gamma = torch.log1p(torch.exp(ipa.head_weights))  # softplus, [H]
    q = ipa.linear_q(s).reshape(N, H, C)
    kv = ipa.linear_kv(s).reshape(N, H, 2 * C)
    k, v = kv[..., :C], kv[..., C:]
    # point outputs are laid out [3, H * P] (OpenFold), local coordinates
    qp = ipa.linear_q_points(s).reshape(N, 3, H, PQ).permute(0, 2, 3, 1)  # [N, H, PQ, 3]
    kvp = ipa.linear_kv_points(s).reshape(N, 3, H, PQ + PV).permute(0, 2, 3, 1)  # [N, H, PQ+PV, 3]
    kp, vp = kvp[:, :, :PQ], kvp[:, :, PQ:]

    def glob(i, x):  # T_i o x
        return x @ R[i].T + t[i]

    b = ipa.linear_b(z)  # [N, N, H]
    out = []
    for i in range(N):
        feats_o, feats_pt, feats_norm, feats_pair = [], [], [], []
        for h in range(H):
            logits = torch.empty(N, dtype=F64)
            for j in range(N):
                dist2 = ((glob(i, qp[i, h]) - glob(j, kp[j, h])) ** 2).sum()
                logits[j] = wL * (q[i, h] @ k[j, h] / math.sqrt(C) + b[i, j, h] - gamma[h] * wC / 2 * dist2)
                if not mask[j]:
                    logits[j] = logits[j] - ipa.inf
            a = torch.softmax(logits, dim=0)  # [N]
            feats_o.append(sum(a[j] * v[j, h] for j in range(N)))  # [C]
            feats_pair.append(sum(a[j] * z[i, j] for j in range(N)))  # [C_Z]
            og = sum(a[j] * glob(j, vp[j, h]) for j in range(N))  # [PV, 3] global
            ol = (og - t[i]) @ R[i]  # T_i^-1: R^T (x - t), rows
            feats_pt.append(ol)
            feats_norm.append(torch.sqrt((ol ** 2).sum(-1) + ipa.eps))  # [PV]
        pts = torch.cat(feats_pt, dim=0)  # [H*PV, 3]
        feats = torch.cat([torch.cat(feats_o), pts[:, 0], pts[:, 1], pts[:, 2], torch.cat(feats_norm),
                           torch.cat(feats_pair)])
        out.append(ipa.linear_out(feats))
    return torch.stack(out)  # [N, C_S]


def test_matches_loop_reference():
    ipa = make_ipa()
    s, z, R, t, mask = inputs(n=6)
    with torch.no_grad():
        ref = reference_ipa(ipa, s, z, R, t, mask)
        out = ipa(s, z, Rigid(R, t), mask)
        out_nomask = ipa(s, z, Rigid(R, t))
        ref_nomask = reference_ipa(ipa, s, z, R, t, torch.ones_like(mask))
    assert float((out - ref).abs().max()) < EXACT_ATOL * max(1.0, float(ref.abs().max()))
    assert float((out_nomask - ref_nomask).abs().max()) < EXACT_ATOL * max(1.0, float(ref.abs().max()))
    assert float((out - out_nomask)[mask].abs().max()) > 1e-3  # the mask matters (so the check above can fail)


def test_batch_dims_equal_per_structure_calls():
    ipa = make_ipa()
    s, z, R, t, mask = inputs(2, 3, n=7, seed=2)
    with torch.no_grad():
        out = ipa(s, z, Rigid(R, t), mask)  # [2, 3, 7, C_S]
        one = ipa(s[1, 2], z[1, 2], Rigid(R[1, 2], t[1, 2]), mask[1, 2])  # [7, C_S]
        float_mask = ipa(s, z, Rigid(R, t), mask.to(F64))
    assert out.shape == (2, 3, 7, C_S)
    assert float((out[1, 2] - one).abs().max()) < EXACT_ATOL
    assert float((float_mask - out).abs().max()) == 0.0


def se3_sampler(scale=10.0):
    """(Q, u): Q Haar on SO(3), u Gaussian; acts on frames as T_i -> (Q, u) o T_i."""

    def sample(generator=None, dtype=F64):
        return haar_so3(generator, dtype), scale * torch.randn(3, generator=generator, dtype=dtype)

    return sample


def act_on_frames(g, x):
    s, z, R, t, mask = x
    Q, u = g
    return s, z, Q @ R, t @ Q.T + u, mask  # (Q, u) o (R, t) = (Q R, Q t + u)


def ipa_fn(ipa):
    return lambda s, z, R, t, mask: ipa(s, z, Rigid(R, t, validate=False), mask)


def test_invariant_under_global_rigid_motion():
    for seed in range(3):  # three random modules
        ipa = make_ipa(seed)
        rep = equivariance_report(ipa_fn(ipa), inputs(2, seed=seed + 10), se3_sampler(), act_on_frames,
                                  lambda g, y: y, n_samples=6, seed=seed)
        assert rep.max_error < INV_ATOL, str(rep)
        assert rep.scale > 0.1  # non-trivial outputs


def test_negative_control_value_points_left_global(monkeypatch):
    """If line 10 does not map the aggregated value points back with T_i^-1, invariance is lost."""
    ipa = make_ipa()
    monkeypatch.setattr(Rigid, "invert_apply", lambda self, points: points)  # skip T_i^-1
    rep = equivariance_report(ipa_fn(ipa), inputs(seed=3), se3_sampler(), act_on_frames, lambda g, y: y,
                              n_samples=3)
    assert rep.max_error > 1e-2, str(rep)


def test_negative_control_points_in_local_frames():
    """Frames that are *not* moved with the data (identity frames, raw coordinates) break invariance.

    Here the query/key/value points are taken in global coordinates directly (all frames = identity)
    and only the point *positions* t_i move: a rotation of the positions then changes the output.
    """
    ipa = make_ipa()
    s, z, R, t, mask = inputs(seed=4)
    I = torch.eye(3, dtype=F64).expand_as(R)

    def f(s, z, t, mask):
        return ipa(s, z, Rigid(I, t, validate=False), mask)

    rep = equivariance_report(f, (s, z, t, mask), haar_so3, lambda Q, x: (x[0], x[1], x[2] @ Q.T, x[3]),
                              lambda Q, y: y, n_samples=3)
    assert rep.max_error > 1e-2, str(rep)


def test_not_invariant_under_reflections():
    """IPA is SE(3)-, not E(3)-invariant: frames built from mirrored atoms give another output."""
    ipa = make_ipa()
    s, z, _, _, mask = inputs(seed=5)
    g = gen(6)
    n_, ca, c = (torch.randn(9, 3, generator=g, dtype=F64) * 3 for _ in range(3))
    M = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64))
    with torch.no_grad():
        out = ipa(s, z, Rigid.from_3_points(n_, ca, c), mask)
        mirrored = ipa(s, z, Rigid.from_3_points(n_ @ M, ca @ M, c @ M), mask)
        Q = rand_rotation(generator=g)
        rotated = ipa(s, z, Rigid.from_3_points(n_ @ Q.T, ca @ Q.T, c @ Q.T), mask)
    assert float((rotated - out).abs().max()) < INV_ATOL
    assert float((mirrored - out).abs().max()) > 1e-2


def test_permutation_equivariance():
    ipa = make_ipa()

    def act_in(p, x):
        s, z, R, t, mask = x
        return s[p], z[p][:, p], R[p], t[p], mask[p]

    rep = equivariance_report(ipa_fn(ipa), inputs(seed=7), permutation_sampler(9), act_in, lambda p, y: y[p],
                              n_samples=4)
    assert rep.max_error < EXACT_ATOL, str(rep)
    # negative control: permuting z's rows only (not its columns) is not a relabelling of residues
    bad = equivariance_report(ipa_fn(ipa), inputs(seed=7), permutation_sampler(9),
                              lambda p, x: (x[0][p], x[1][p], x[2][p], x[3][p], x[4][p]), lambda p, y: y[p],
                              n_samples=4)
    assert bad.max_error > 1e-3, str(bad)


def test_masked_residues_do_not_influence_unmasked_outputs():
    ipa = make_ipa()
    s, z, R, t, mask = inputs(seed=8)
    g = gen(9)
    s2, z2, R2, t2 = s.clone(), z.clone(), R.clone(), t.clone()
    off = ~mask
    s2[off] = torch.randn_like(s2[off])
    z2[:, off] = torch.randn_like(z2[:, off])  # keys j masked: z_ij
    z2[off] = torch.randn_like(z2[off])  # queries i masked
    R2[off] = rand_rotation(int(off.sum()), generator=g)
    t2[off] = torch.randn_like(t2[off])
    with torch.no_grad():
        out = ipa(s, z, Rigid(R, t), mask)
        out2 = ipa(s2, z2, Rigid(R2, t2), mask)
        nomask = ipa(s, z, Rigid(R, t)), ipa(s2, z2, Rigid(R2, t2))
    assert float((out - out2)[mask].abs().max()) < INV_ATOL
    assert float((nomask[0] - nomask[1])[mask].abs().max()) > 1e-2  # without the mask they do


def test_zero_init_out_and_head_weights():
    torch.manual_seed(0)
    ipa = InvariantPointAttention(C_S, C_Z, C, H, PQ, PV).double()
    s, z, R, t, mask = inputs(seed=10)
    out = ipa(s, z, Rigid(R, t), mask)
    assert float(out.detach().abs().max()) == 0.0  # AF2's "final" init: the update starts at 0 ...
    out.square().sum().backward()
    assert torch.allclose(nn.functional.softplus(ipa.head_weights), torch.ones(H, dtype=F64))  # gamma = 1
    ipa.zero_grad()
    ipa(s, z, Rigid(R, t), mask).sum().backward()
    assert float(ipa.linear_out.weight.grad.abs().max()) > 0  # ... and it can learn


def test_gradcheck():
    ipa = InvariantPointAttention(4, 3, 2, 2, 2, 2, zero_init_out=False).double()
    g = gen(11)
    n = 4
    s = torch.randn(n, 4, generator=g, dtype=F64, requires_grad=True)
    z = torch.randn(n, n, 3, generator=g, dtype=F64, requires_grad=True)
    R = rand_rotation(n, generator=g).requires_grad_()
    t = torch.randn(n, 3, generator=g, dtype=F64, requires_grad=True)
    mask = torch.tensor([True, True, False, True])
    assert torch.autograd.gradcheck(lambda s, z, R, t: ipa(s, z, Rigid(R, t, validate=False), mask), (s, z, R, t),
                                    fast_mode=True)


def test_compile_fullgraph_matches_eager():
    """One graph (no breaks) with a Rigid argument; forward and input gradients equal eager mode."""
    ipa = make_ipa()
    s, z, R, t, mask = inputs(seed=12)
    frames = Rigid(R, t)
    compiled = torch.compile(ipa, backend="eager", fullgraph=True)
    s.requires_grad_()
    y1, y2 = compiled(s, z, frames, mask), ipa(s, z, frames, mask)
    (g1,) = torch.autograd.grad(y1.square().sum(), s)
    (g2,) = torch.autograd.grad(y2.square().sum(), s)
    assert float((y1 - y2).detach().abs().max()) < EXACT_ATOL and float((g1 - g2).abs().max()) < EXACT_ATOL


def test_bad_inputs():
    ipa = make_ipa()
    s, z, R, t, mask = inputs(n=5, seed=13)
    T = Rigid(R, t)
    with pytest.raises(ValueError, match=r"s must have shape \[..., N, c_s=10\]"):
        ipa(s[:, :4], z, T, mask)
    with pytest.raises(ValueError, match=r"z must have shape \[..., N, N, c_z\] = \[5, 5, 6\]"):
        ipa(s, z[:4], T, mask)
    with pytest.raises(ValueError, match=r"frames must have batch shape \[..., N\] = \[5\]"):
        ipa(s, z, T[:4], mask)
    with pytest.raises(TypeError, match="frames must be a minequi.rigid.Rigid"):
        ipa(s, z, (R, t), mask)
    with pytest.raises(ValueError, match=r"mask must be a \[..., N\] = \[5\] tensor"):
        ipa(s, z, T, mask[:4])
    with pytest.raises(TypeError, match="mask must be bool or floating"):
        ipa(s, z, T, mask.long())
    with pytest.raises(TypeError, match="must match"):
        ipa(s.float(), z.float(), T.to(torch.float32), mask)
    with pytest.raises(ValueError, match="n_heads must be a positive int"):
        InvariantPointAttention(4, 4, 4, 0, 4, 4)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the peer's torch.cuda.amp.autocast
def test_invariant_point_attention_package_equivalence():
    """Same weights -> same outputs as lucidrains' invariant-point-attention (the benchmark's peer)."""
    pytest.importorskip("invariant_point_attention")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ipa.py"
    spec = importlib.util.spec_from_file_location("bench_ipa", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    err, scale = bench.equivalence_error()
    assert scale > 0.5 and err < EXACT_ATOL, (err, scale)  # measured 4.4e-16
    # negative control: the peer's points act as x @ R; giving it R (not R^T) is another function
    peer = bench.make_peer(12, 5, 4, 3, 2, 3).double()
    mine = bench.minequi_twin(peer, 12, 5, 4, 3, 2, 3)
    g = gen(15)
    s, z = torch.randn(1, 6, 12, generator=g, dtype=F64), torch.randn(1, 6, 6, 5, generator=g, dtype=F64)
    R, t = rand_rotation(6, generator=g)[None], torch.randn(1, 6, 3, generator=g, dtype=F64)
    with torch.no_grad():
        assert float((mine(s, z, Rigid(R, t)) - peer(s, z, rotations=R, translations=t)).abs().max()) > 1e-3


def test_edge_sizes_and_all_masked():
    ipa = make_ipa()
    for n in (0, 1):
        s, z, R, t, _ = inputs(n=max(n, 2), seed=16)
        out = ipa(s[:n], z[:n, :n], Rigid(R[:n], t[:n]))
        assert out.shape == (n, C_S) and bool(torch.isfinite(out).all())
    s, z, R, t, mask = inputs(n=5, seed=17)
    with torch.no_grad():  # every key masked: the same shift for all logits, so the unmasked attention
        none = ipa(s, z, Rigid(R, t), torch.zeros(5, dtype=torch.bool))
        # measured 8.2e-12: logits of size ~1 shifted by -1e5 keep ~11 fewer digits in float64
        assert float((none - ipa(s, z, Rigid(R, t))).abs().max()) < 1e-9
