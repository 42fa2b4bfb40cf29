"""Benchmark: minequi's InvariantPointAttention vs the cost floor (dense attention with a pair bias) and a published IPA.

Rows, all at the same widths (default: AF2's structure module, 256 residues, 12 heads, c_s = 384,
c_z = 128, c_hidden = 16, 4 query/key points, 8 value points, batch 1):

* ``minequi IPA``: :class:`minequi.ipa.InvariantPointAttention` (random weights, ``zero_init_out=False``).
* ``floor``: :class:`DensePairBiasAttention` below, the same attention without points: q/k/v linears,
  the pair-bias linear from ``z``, softmax, ``o = a v``, ``o_pair = a z``, the output linear from
  ``H (c_hidden + c_z)`` features.  IPA cannot cost less than this; the target is <= 1.5x.
* ``invariant-point-attention``: lucidrains' package (PyPI ``invariant-point-attention``, 0.2.x), a
  published IPA module, with the same widths.  Before timing, :func:`equivalence_error` copies its
  weights into a minequi module (permuting the layouts; its points act as ``x @ R``, so it gets
  ``R^T``) and checks in float64 that the two compute the same function.
* OpenFold's IPA is not timed: OpenFold is not on PyPI (the ``openfold`` 0.0.1 sdist there does not
  build: ``ModuleNotFoundError: No module named 'scripts'``) and is installed from GitHub with
  CUDA extensions, which this offline benchmark cannot do.

Each step is forward + backward of ``out.square().mean()`` with respect to the parameters, ``s`` and
``z``; time is the median of ``--repeats`` interleaved repeats (benchmarks/timing.py).  Peak memory
is the largest amount of memory allocated *during* one step above what was allocated before it (the
parameters and inputs are not counted; activations saved for backward, temporaries and gradients
are): on CUDA ``torch.cuda.max_memory_allocated()`` minus ``torch.cuda.memory_allocated()`` before
the step; on CPU the maximum of the total of torch.profiler's memory timeline
(``export_memory_timeline``, which replays every allocation and free of the step).

Usage: python benchmarks/bench_ipa.py [--device cpu|cuda] [--repeats 10] [--residues 256] [--threads 0]
"""
import argparse
import json
import math
import os
import tempfile
import warnings

import torch
from torch import nn

from minequi.ipa import InvariantPointAttention
from minequi.rigid import Rigid
from minequi.testing import rand_rotation

try:
    from invariant_point_attention import InvariantPointAttention as PeerIPA  # benchmark-only dependency
except ImportError:  # pragma: no cover
    PeerIPA = None


class DensePairBiasAttention(nn.Module):
    """The cost floor: multi-head attention with a pair bias and pair values, IPA without the points."""

    def __init__(self, c_s, c_z, c_hidden, n_heads):
        super().__init__()
        self.c_hidden, self.n_heads = c_hidden, n_heads
        self.linear_q = nn.Linear(c_s, n_heads * c_hidden)
        self.linear_kv = nn.Linear(c_s, 2 * n_heads * c_hidden)
        self.linear_b = nn.Linear(c_z, n_heads)
        self.linear_out = nn.Linear(n_heads * (c_hidden + c_z), c_s)

    def forward(self, s, z):
        H, C = self.n_heads, self.c_hidden
        q = self.linear_q(s).unflatten(-1, (H, C)).transpose(-2, -3)  # [*, H, N, C]
        k, v = self.linear_kv(s).unflatten(-1, (H, 2 * C)).transpose(-2, -3).split(C, dim=-1)  # [*, H, N, C]
        w_L = math.sqrt(1.0 / 3.0)
        logits = (q * (w_L / math.sqrt(C))) @ k.transpose(-1, -2)  # [*, H, N, N]
        logits = logits + w_L * self.linear_b(z).movedim(-1, -3)  # [*, H, N, N]
        a = torch.softmax(logits, dim=-1)  # [*, H, N, N]
        o = (a @ v).transpose(-2, -3).flatten(-2)  # [*, N, H*C]
        o_pair = (a.transpose(-2, -3) @ z).flatten(-2)  # [*, N, H*c_z]
        return self.linear_out(torch.cat([o, o_pair], dim=-1))  # [*, N, c_s]


def make_peer(c_s, c_z, c_hidden, n_heads, n_qk, n_v, seed=0):
    torch.manual_seed(seed)
    return PeerIPA(dim=c_s, heads=n_heads, scalar_key_dim=c_hidden, scalar_value_dim=c_hidden, point_key_dim=n_qk,
                   point_value_dim=n_v, pairwise_repr_dim=c_z, require_pairwise_repr=True)


def minequi_twin(peer, c_s, c_z, c_hidden, n_heads, n_qk, n_v):
    """A minequi IPA with the peer's weights (layouts permuted; the peer has no q/k/v biases)."""
    H, C, Pq, Pv = n_heads, c_hidden, n_qk, n_v
    ipa = InvariantPointAttention(c_s, c_z, C, H, Pq, Pv, zero_init_out=False).to(peer.to_out.weight.dtype)
    with torch.no_grad():
        for lin in (ipa.linear_q, ipa.linear_kv, ipa.linear_q_points, ipa.linear_kv_points):
            lin.bias.zero_()
        ipa.linear_q.weight.copy_(peer.to_scalar_q.weight)
        kv = ipa.linear_kv.weight.view(H, 2, C, c_s)
        kv[:, 0] = peer.to_scalar_k.weight.view(H, C, c_s)
        kv[:, 1] = peer.to_scalar_v.weight.view(H, C, c_s)
        # peer: rows (h, p, xyz); minequi: rows (xyz, h, p)
        ipa.linear_q_points.weight.view(3, H, Pq, c_s).copy_(peer.to_point_q.weight.view(H, Pq, 3, c_s).permute(2, 0, 1, 3))
        kvp = ipa.linear_kv_points.weight.view(3, H, Pq + Pv, c_s)
        kvp[:, :, :Pq] = peer.to_point_k.weight.view(H, Pq, 3, c_s).permute(2, 0, 1, 3)
        kvp[:, :, Pq:] = peer.to_point_v.weight.view(H, Pv, 3, c_s).permute(2, 0, 1, 3)
        ipa.linear_b.weight.copy_(peer.to_pairwise_attn_bias[0].weight)
        ipa.linear_b.bias.copy_(peer.to_pairwise_attn_bias[0].bias)
        ipa.head_weights.copy_(peer.point_weights)
        # output features: peer (o[h c], points[h p xyz], norms[h p], pair[h cz]); minequi (o, x[h p], y, z, norms, pair)
        hp = torch.arange(H * Pv)
        peer_pts = H * C + hp[None, :] * 3 + torch.arange(3)[:, None]  # [3, H*Pv]
        order = torch.cat([torch.arange(H * C), peer_pts.reshape(-1),
                           torch.arange(H * C + 3 * H * Pv, H * (C + 4 * Pv + c_z))])
        ipa.linear_out.weight.copy_(peer.to_out.weight[:, order])
        ipa.linear_out.bias.copy_(peer.to_out.bias)
    return ipa


def equivalence_error(n=7, c_s=12, c_z=5, c_hidden=4, n_heads=3, n_qk=2, n_v=3, seed=0):
    """max |minequi - invariant-point-attention| in float64 with copied weights, and the output scale."""
    peer = make_peer(c_s, c_z, c_hidden, n_heads, n_qk, n_v, seed).double()
    with torch.no_grad():  # the peer starts with ordinary weights everywhere; make head weights differ per head
        peer.point_weights.normal_(0.5, 0.5)
    ipa = minequi_twin(peer, c_s, c_z, c_hidden, n_heads, n_qk, n_v)
    g = torch.Generator().manual_seed(seed + 1)
    s = torch.randn(2, n, c_s, generator=g, dtype=torch.float64)
    z = torch.randn(2, n, n, c_z, generator=g, dtype=torch.float64)
    R = rand_rotation(2 * n, generator=g).reshape(2, n, 3, 3)
    t = torch.randn(2, n, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        mine = ipa(s, z, Rigid(R, t))
        theirs = peer(s, z, rotations=R.transpose(-1, -2), translations=t)
    return float((mine - theirs).abs().max()), float(theirs.abs().max())


def peak_step_bytes(step, device):
    """Peak memory allocated during ``step()`` above what was allocated before it (see the module doc)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            times, sizes = json.load(f)
    return max(sum(row) for row in sizes) - sum(sizes[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--residues", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--c-s", type=int, default=384)
    parser.add_argument("--c-z", type=int, default=128)
    parser.add_argument("--c-hidden", type=int, default=16)
    parser.add_argument("--qk-points", type=int, default=4)
    parser.add_argument("--v-points", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: leave the default; use 1 on a shared, oversubscribed machine)")
    args = parser.parse_args()
    from timing import median_times  # benchmarks/timing.py

    # the peer's torch.cuda.amp.autocast and the profiler's export_memory_timeline warn of deprecation
    warnings.filterwarnings("ignore", category=FutureWarning)

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    B, N, H = args.batch, args.residues, args.heads
    c_s, c_z, C, Pq, Pv = args.c_s, args.c_z, args.c_hidden, args.qk_points, args.v_points
    print(f"torch {torch.__version__}, device {device}, {dtype}, threads {torch.get_num_threads()}")
    if PeerIPA is not None:
        from importlib.metadata import version

        err, scale = equivalence_error()
        print(f"invariant-point-attention {version('invariant-point-attention')}: equivalence (float64, same weights) "
              f"max |minequi - peer| = {err:.1e} (outputs of size ~{scale:.1f})")
        assert err < 1e-12 * max(1.0, scale), err
    else:
        print("invariant-point-attention is not installed (pip install invariant-point-attention): no peer row")

    gen = torch.Generator().manual_seed(0)
    s0 = torch.randn(B, N, c_s, generator=gen).to(device=device, dtype=dtype)  # [B, N, c_s]
    z0 = torch.randn(B, N, N, c_z, generator=gen).to(device=device, dtype=dtype)  # [B, N, N, c_z]
    R = rand_rotation(B * N, generator=gen).reshape(B, N, 3, 3).to(device=device, dtype=dtype)  # [B, N, 3, 3]
    t = (3.8 * torch.randn(B, N, 3, generator=gen)).to(device=device, dtype=dtype)  # [B, N, 3]
    frames = Rigid(R, t)

    torch.manual_seed(0)
    ipa = InvariantPointAttention(c_s, c_z, C, H, Pq, Pv, zero_init_out=False).to(device=device, dtype=dtype)
    floor = DensePairBiasAttention(c_s, c_z, C, H).to(device=device, dtype=dtype)
    models = [("minequi IPA", ipa, lambda m, s, z: m(s, z, frames)),
              ("floor (dense attention + pair bias)", floor, lambda m, s, z: m(s, z))]
    if PeerIPA is not None:
        peer = make_peer(c_s, c_z, C, H, Pq, Pv).to(device=device, dtype=dtype)
        Rt = R.transpose(-1, -2).contiguous()
        models.append(("invariant-point-attention (peer)", peer,
                       lambda m, s, z: m(s, z, rotations=Rt, translations=t)))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(model, call):
        def run():
            for p in model.parameters():
                p.grad = None
            s, z = s0.detach().requires_grad_(True), z0.detach().requires_grad_(True)
            call(model, s, z).square().mean().backward()
            sync()
        return run

    steps = [step(m, call) for _, m, call in models]
    times = median_times(steps, args.repeats)
    peaks = [peak_step_bytes(st, device) for st in steps]
    print(f"batch {B} x {N} residues, {H} heads, c_s {c_s}, c_z {c_z}, c_hidden {C}, points {Pq} qk / {Pv} v; "
          f"forward + backward, median of {args.repeats}; peak = memory allocated during one step")
    print(f"{'row':38s} {'ms':>9s} {'/ floor':>8s} {'peak MiB':>9s} {'/ floor':>8s}")
    for (name, _, _), tm, pk in zip(models, times, peaks):
        print(f"{name:38s} {1e3 * tm:9.2f} {tm / times[1]:7.2f}x {pk / 2**20:9.1f} {pk / peaks[1]:7.2f}x")


if __name__ == "__main__":
    main()
