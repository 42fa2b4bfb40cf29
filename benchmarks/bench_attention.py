"""SE(3)-Transformer attention layer: minequi vs se3-transformer-pytorch, side by side in one run.

The most like-for-like pair the two APIs allow:

* one attention layer (no feed-forward block, no normalisation), node features of degrees
  0, 1, 2 with 16 channels each (minequi: ``16x0e+16x1o+16x2e``; the package's types carry no
  parity, and type ``l`` features built from harmonics have parity ``(-1)^l``), keys of the same
  degrees and channels, values of the same degrees and channels, 2 heads (8 channels of every
  degree per head), edge harmonics up to ``l = 2``, an output projection to the same features;
* the same graph: ``N = 128`` random points (batch 1), each attending to its ``k = 12`` nearest
  neighbours (``E = 1,536`` edges; the package takes ``[b, n, k]`` neighbour indices, minequi the
  same pairs as an ``edge_index``); the neighbour search is done once, outside the timing;
* forward + backward (gradients with respect to the features, the positions and the weights),
  float32.  The package's per-edge equivariant basis (``get_basis(..., differentiable=True)``) is
  part of its forward, as minequi's spherical harmonics and radial MLPs are part of ours.

What differs and cannot be made equal through the package's API:

* **kernels**: the package's keys and values are *fully connected* TFN kernels: for every pair of
  degrees ``(l_in, l_out)`` a radial network (1 -> 128 -> 128 -> ``F * 16 * 16``, with LayerNorm and
  GELU; ``F = 2 min(l_in, l_out) + 1`` basis functions) gives ``16 x 16`` weights per frequency and
  edge.  minequi's keys and values are a per-node ``Linear`` followed by a *depthwise* ("uvu")
  convolution with one radial weight per channel and path (``Linear`` -> ``PointConv``, NequIP's
  factorisation), from one radial MLP per convolution; we give that MLP the same hidden widths
  (8 Bessel functions -> 128 -> 128 -> weights).  The function classes differ (the package's is
  larger per layer); the shapes of inputs, outputs, keys, values, heads and graphs are the same.
* minequi multiplies the softmax by a smooth envelope of the edge length (continuity at the cutoff,
  see ``minequi/attention.py``); here the cutoff is set beyond the farthest neighbour.

Run:  .venv/bin/python benchmarks/bench_attention.py [--device cpu|cuda] [--repeats 3] [--threads 0] [--nodes 128] [--neighbours 12]
"""
import argparse
import math
import os
import tempfile

import torch

# se3-transformer-pytorch caches its basis in ~/.cache.equivariant_attention unless CACHE_PATH says otherwise:
# keep this benchmark from writing into the home directory
os.environ.setdefault("CACHE_PATH", os.path.join(tempfile.gettempdir(), "minequi-bench-se3-transformer-cache"))

from minequi import EquivariantAttention, Irreps
from timing import median_times  # benchmarks/timing.py

N, K, C, HEADS, LMAX = 128, 12, 16, 2, 2  # N and K: --nodes, --neighbours
IRREPS = "+".join(f"{C}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(LMAX + 1))  # 16x0e+16x1o+16x2e


def make_graph(device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(N, 3, generator=g, dtype=torch.float64) * 4.0  # [N, 3]
    d = torch.cdist(pos, pos)  # [N, N]
    d.fill_diagonal_(math.inf)
    dist, nbr = d.topk(K, dim=1, largest=False)  # [N, K]  the K nearest neighbours j of each i
    edge_index = torch.stack([nbr.reshape(-1), torch.arange(N).repeat_interleave(K)])  # [2, E] j -> i
    cutoff = float(dist.max()) * 1.05
    x = torch.randn(N, Irreps(IRREPS).dim, generator=g, dtype=torch.float64)  # [N, dim]
    return pos.to(device, dtype), x.to(device, dtype), edge_index.to(device), nbr.to(device), cutoff


class Theirs(torch.nn.Module):
    """se3-transformer-pytorch's AttentionSE3 on one graph, with its basis computed in forward."""

    def __init__(self):
        super().__init__()
        from se3_transformer_pytorch.se3_transformer_pytorch import AttentionSE3, Fiber

        self.att = AttentionSE3(Fiber.create(LMAX + 1, C), dim_head=C // HEADS, heads=HEADS, attend_self=False, edge_dim=0,
                                splits=1)

    def forward(self, feats, pos, nbr):
        from se3_transformer_pytorch.basis import get_basis
        from se3_transformer_pytorch.utils import batched_index_select

        nbr_b = nbr[None]  # [1, N, K]
        rel_pos = pos[None, :, None, :] - batched_index_select(pos[None], nbr_b, dim=1)  # [1, N, K, 3]  x_i - x_j
        rel_dist = rel_pos.norm(dim=-1)  # [1, N, K]
        basis = get_basis(rel_pos, LMAX, differentiable=True)
        return self.att(feats, (nbr_b, None, None), rel_dist, basis)


def to_fiber(x):
    """minequi's [N, dim] (16x0e+16x1o+16x2e) -> the package's {'l': [1, N, 16, 2l+1]}."""
    out, start = {}, 0
    for l in range(LMAX + 1):
        n = C * (2 * l + 1)
        out[str(l)] = x[None, :, start:start + n].reshape(1, N, C, 2 * l + 1)
        start += n
    return out


def main():
    global N, K
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--nodes", type=int, default=N)
    parser.add_argument("--neighbours", type=int, default=K)
    args = parser.parse_args()
    N, K = args.nodes, args.neighbours
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32
    pos, x, edge_index, nbr, cutoff = make_graph(device, dtype)

    torch.manual_seed(0)
    ours = EquivariantAttention(IRREPS, IRREPS, IRREPS, HEADS, "0e+1o+2e", num_basis=8, cutoff=cutoff,
                                radial_hidden=[128, 128]).to(device, dtype)
    theirs = Theirs().to(device, dtype)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    grad_out = torch.randn(N, Irreps(IRREPS).dim, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_ours(backward):
        xg, pg = x.detach().requires_grad_(backward), pos.detach().requires_grad_(backward)
        y = ours(xg, pg, edge_index)  # [N, dim]
        if backward:
            y.backward(grad_out)
        sync()

    def run_theirs(backward):
        xg, pg = x.detach().requires_grad_(backward), pos.detach().requires_grad_(backward)
        out = theirs(to_fiber(xg), pg, nbr)
        y = torch.cat([out[str(l)].reshape(N, -1) for l in range(LMAX + 1)], dim=1)  # [N, dim]
        if backward:
            y.backward(grad_out)
        sync()

    with torch.no_grad():
        run_ours(False)
        run_theirs(False)
    print(f"graph: {N} nodes x {K} nearest neighbours = {edge_index.shape[1]} edges; features {IRREPS}, "
          f"{HEADS} heads, harmonics l <= {LMAX}, {dtype}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"parameters: minequi {n_ours:,}, se3-transformer-pytorch {n_theirs:,}")
    with torch.no_grad():
        t_ours_f, t_theirs_f = median_times([lambda: run_ours(False), lambda: run_theirs(False)], args.repeats, warmup=1)
    t_ours_b, t_theirs_b = median_times([lambda: run_ours(True), lambda: run_theirs(True)], args.repeats,
                                        warmup=1)
    print(f"{'':22s}{'minequi':>12s}{'se3-tr.-pytorch':>18s}{'ratio (theirs/ours)':>22s}")
    print(f"{'forward':22s}{t_ours_f * 1e3:10.1f}ms{t_theirs_f * 1e3:16.1f}ms{t_theirs_f / t_ours_f:20.2f}x")
    print(f"{'forward+backward':22s}{t_ours_b * 1e3:10.1f}ms{t_theirs_b * 1e3:16.1f}ms{t_theirs_b / t_ours_b:20.2f}x")
    if device.type == "cuda":
        for name, fn in (("minequi", run_ours), ("se3-transformer-pytorch", run_theirs)):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn(True)
            print(f"peak memory fwd+bwd, {name}: {(torch.cuda.max_memory_allocated() - base) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
