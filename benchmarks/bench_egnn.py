"""Benchmark: minequi's EGNNLayer vs egnn-pytorch's EGNN layer, forward + backward, same graphs, same weights.

Like for like, exactly.  egnn-pytorch (lucidrains, 0.2.x) computes, on a dense ``[b, n, n]`` grid,
``m_ij = edge_mlp([h_i, h_j, |x_i - x_j|^2])``, ``x_i' = x_i + sum_j (x_i - x_j) coors_mlp(m_ij)``,
``h_i' = h_i + node_mlp([h_i, sum_j m_ij])``: these are the EGNN equations 3-6 with residual features,
sum coordinate aggregation, no attention / normalisation / tanh, and the pair ``j = i`` included
(its ``x_i - x_i`` is zero but its message counts in ``m_i``).  Its MLPs have other widths than the
reference EGNN (edge MLP ``E -> 2E -> m_dim``, coordinate MLP ``m_dim -> 4 m_dim -> 1``, node MLP
``dim + m_dim -> 2 dim -> dim``).  minequi's ``EGNNLayer(dim, dim, m_dim, residual=True,
coords_agg="sum")`` computes the same equations on an ``edge_index`` and applies whatever
``phi_e``, ``phi_x``, ``phi_h`` Sequentials it holds, so :func:`minequi_twin` gives it *copies of the
peer's MLPs*: both layers then have identical parameters and compute the same function on the same
graph.  :func:`equivalence_error` checks that (float64, max |difference| of ``h'`` and ``x'``) before
anything is timed; ``tests/test_egnn.py`` runs it too.

Rows (``--graphs`` graphs x ``--nodes`` nodes, Gaussian positions, features ``--dim``, messages ``--m-dim``):

* ``dense``: all ``n x n`` pairs per graph (the peer's default, fully connected form; minequi gets the
  same pairs as an ``edge_index`` with self-loops);
* ``knn16``: the peer's ``num_nearest_neighbors=16`` (it ranks all pairs by distance, self included,
  and keeps 16 per node); minequi gets exactly those 16 edges per node as an ``edge_index``;
* ``radius``: minequi on ``radius_graph`` with the cutoff that gives 16 neighbours per node on
  average (plus the self-loop, as the peer), peer as in ``knn16``; a second minequi row includes
  building the radius graph in every step (the peer finds its neighbours inside its forward).

Each step is forward + backward of ``h'.square().mean() + x'.square().mean()`` with respect to the
parameters and the positions; the median of ``--repeats`` interleaved repeats (benchmarks/timing.py).

Usage: python benchmarks/bench_egnn.py [--device cpu|cuda] [--repeats 10] [--dim 32] [--m-dim 32]
"""
import argparse
import copy

import torch
from torch import nn

from minequi.egnn import EGNNLayer
from minequi.graph import complete_graph, radius_graph

try:
    from egnn_pytorch import EGNN as PeerEGNN  # benchmark-only dependency
except ImportError:  # pragma: no cover
    PeerEGNN = None


def make_peer(dim, m_dim, k=0, seed=0):
    """egnn-pytorch's layer with ordinary (not 1e-3-scaled) weights, so that every term matters."""
    torch.manual_seed(seed)
    peer = PeerEGNN(dim=dim, m_dim=m_dim, num_nearest_neighbors=k)
    for module in peer.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    return peer


def minequi_twin(peer, dim, m_dim, first_linear="split"):
    """An EGNNLayer computing the peer's function: same equations, copies of the peer's MLPs."""
    layer = EGNNLayer(dim, dim, m_dim, residual=True, coords_agg="sum", first_linear=first_linear)
    layer.phi_e = copy.deepcopy(peer.edge_mlp)  # Linear(2 dim + 1, .), Identity, SiLU, Linear(., m_dim), SiLU
    layer.phi_x = copy.deepcopy(peer.coors_mlp)  # Linear(m_dim, 4 m_dim), Identity, SiLU, Linear(4 m_dim, 1)
    layer.phi_h = copy.deepcopy(peer.node_mlp)  # Linear(dim + m_dim, 2 dim), Identity, SiLU, Linear(2 dim, dim)
    return layer


def dense_edges(b, n, device):
    """All (j, i) pairs of each graph, self-pairs included, sorted by target: [2, b n n]."""
    return complete_graph(b * n, torch.arange(b, device=device).repeat_interleave(n), loop=True)  # [2, b n n]


def knn_edges(coors, k):
    """The peer's neighbour choice: topk of the squared distances (self included), as an edge_index."""
    b, n, _ = coors.shape
    rel = coors[:, :, None, :] - coors[:, None, :, :]  # [b, n, n, 3]
    dist = (rel**2).sum(dim=-1)  # [b, n, n]
    idx = dist.topk(k, dim=-1, largest=False).indices  # [b, n, k]
    off = (torch.arange(b, device=coors.device) * n)[:, None, None]  # [b, 1, 1]
    j = (idx + off).reshape(-1)  # [b n k]
    i = (torch.arange(n, device=coors.device)[None, :, None] + off).expand(b, n, k).reshape(-1)  # [b n k]
    return torch.stack([j, i])  # [2, b n k]


def radius_for_degree(pos, batch, degree):
    """The cutoff at which the mean number of neighbours (self excluded) is ``degree``."""
    lo, hi = 0.0, 100.0
    for _ in range(60):
        mid = (lo + hi) / 2
        mean = radius_graph(pos, mid, batch).shape[1] / pos.shape[0]
        lo, hi = (mid, hi) if mean < degree else (lo, mid)
    return hi


def equivalence_error(dim=8, m_dim=6, b=3, n=10, k=4, seed=0):
    """max |minequi - peer| of (h', x') in float64, dense and k-nearest forms (should be ~1e-15)."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, dim, generator=gen, dtype=torch.float64)
    coors = torch.randn(b, n, 3, generator=gen, dtype=torch.float64)
    errors = {}
    for name, kk in (("dense", 0), ("knn", k)):
        peer = make_peer(dim, m_dim, kk, seed).double()
        ei = dense_edges(b, n, "cpu") if kk == 0 else knn_edges(coors, kk)
        with torch.no_grad():
            h_p, x_p = peer(feats, coors)
        errors[name + " scale"] = float(h_p.abs().max())
        for first_linear in ("split", "concat"):
            mine = minequi_twin(peer, dim, m_dim, first_linear).double()
            with torch.no_grad():
                h_m, x_m = mine(feats.reshape(b * n, dim), coors.reshape(b * n, 3), ei)
            err = max(float((h_m - h_p.reshape(b * n, dim)).abs().max()),
                      float((x_m - x_p.reshape(b * n, 3)).abs().max()))
            errors[name] = max(errors.get(name, 0.0), err)
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--graphs", type=int, default=32)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--m-dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: leave the default; use 1 on a shared, oversubscribed machine)")
    parser.add_argument("--first-linear", default="split", choices=["split", "concat"],
                        help="how minequi evaluates phi_e's first Linear (same function)")
    args = parser.parse_args()
    if PeerEGNN is None:
        raise SystemExit("egnn-pytorch is not installed (pip install egnn-pytorch)")
    from timing import median_times  # benchmarks/timing.py

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    import egnn_pytorch  # noqa: F401
    from importlib.metadata import version

    errs = equivalence_error()
    print(f"torch {torch.__version__}, egnn-pytorch {version('egnn-pytorch')}, device {device}, {dtype}, "
          f"threads {torch.get_num_threads()}")
    print(f"equivalence (float64, same weights): max |minequi - egnn-pytorch| = {errs['dense']:.1e} dense, "
          f"{errs['knn']:.1e} knn (outputs of size ~{errs['dense scale']:.1f})")
    assert errs["dense"] < 1e-12 and errs["knn"] < 1e-12, errs

    b, n, dim, m_dim = args.graphs, args.nodes, args.dim, args.m_dim
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(b, n, dim, generator=gen).to(device=device, dtype=dtype)
    coors = torch.randn(b, n, 3, generator=gen).to(device=device, dtype=dtype)
    h_flat, x_flat = feats.reshape(b * n, dim), coors.reshape(b * n, 3)
    batch = torch.arange(b, device=device).repeat_interleave(n)
    cutoff = radius_for_degree(x_flat, batch, args.k - 1)  # k - 1 neighbours + the self-loop ~ k per node

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step_peer(peer):
        def run():
            for p in peer.parameters():
                p.grad = None
            c = coors.detach().requires_grad_(True)
            h2, x2 = peer(feats, c)
            (h2.square().mean() + x2.square().mean()).backward()
            sync()
        return run

    def step_mine(layer, edge_index=None, build=False):
        def run():
            for p in layer.parameters():
                p.grad = None
            x = x_flat.detach().requires_grad_(True)
            ei = radius_graph(x, cutoff, batch, loop=True) if build else edge_index
            h2, x2 = layer(h_flat, x, ei)
            (h2.square().mean() + x2.square().mean()).backward()
            sync()
        return run

    rows = []
    peer_dense = make_peer(dim, m_dim, 0).to(device=device, dtype=dtype)
    mine_dense = minequi_twin(peer_dense, dim, m_dim, args.first_linear).to(device=device, dtype=dtype)
    ei_dense = dense_edges(b, n, device)
    t = median_times([step_peer(peer_dense), step_mine(mine_dense, ei_dense)], args.repeats)
    rows.append(("dense (all n x n pairs)", ei_dense.shape[1], ei_dense.shape[1], t[1], t[0]))

    peer_knn = make_peer(dim, m_dim, args.k).to(device=device, dtype=dtype)
    mine_knn = minequi_twin(peer_knn, dim, m_dim, args.first_linear).to(device=device, dtype=dtype)
    ei_knn = knn_edges(coors, args.k)
    ei_rad = radius_graph(x_flat, cutoff, batch, loop=True)
    t = median_times([step_peer(peer_knn), step_mine(mine_knn, ei_knn), step_mine(mine_knn, ei_rad),
                      step_mine(mine_knn, build=True)], args.repeats)
    E = b * n * args.k
    rows.append((f"knn{args.k} (same edges)", E, ei_knn.shape[1], t[1], t[0]))
    rows.append((f"radius {cutoff:.3f} (~{args.k}/node)", E, ei_rad.shape[1], t[2], t[0]))
    rows.append(("radius + radius_graph build", E, ei_rad.shape[1], t[3], t[0]))

    print(f"{b} graphs x {n} nodes, dim {dim}, m_dim {m_dim}, first_linear={args.first_linear!r}; "
          f"forward + backward, median of {args.repeats}")
    print(f"{'row':34s} {'E peer':>8s} {'E mine':>8s} {'minequi ms':>11s} {'egnn-pytorch ms':>16s} {'speed-up':>9s}")
    for name, e_peer, e_mine, t_mine, t_peer in rows:
        print(f"{name:34s} {e_peer:8d} {e_mine:8d} {1e3 * t_mine:11.2f} {1e3 * t_peer:16.2f} {t_peer / t_mine:8.2f}x")


if __name__ == "__main__":
    main()
