"""Point convolution (TFN layer, "uvu" tensor product per edge): minequi vs e3nn, side by side in one run.

``32x0e+32x1o+32x2e`` node features, ``0e+1o+2e`` edge harmonics, output
``32x0e+32x1o+32x2e`` through every allowed depthwise ("uvu") path (11 paths, 352
weights per edge), per-edge weights from a radial MLP (8 Bessel functions x polynomial
envelope -> 16 -> 352), 1,000 nodes and 20,000 edges (a radius graph of random points
whose cutoff is chosen to give that many edges), float32, forward and forward+backward
(gradients with respect to the features, the positions and the MLP weights).

* minequi: ``minequi.PointConv`` (fused gather -> per-edge tensor product -> scatter-sum).
* e3nn 0.6: the same layer built the way e3nn users build it: ``o3.spherical_harmonics``,
  ``o3.TensorProduct(..., instructions, shared_weights=False)`` on the gathered features
  (e3nn's default torch.fx code generation), then a scatter-sum (``index_add``).  The radial
  embedding and the radial MLP are the very same modules as minequi's.

Before timing we check that both layers give the same output (the weights of e3nn's
paths multiplied by the per-path signs of the conventions page) and that both have the
same number of weights per edge.

Peak memory of one forward+backward:
* on CPU, two ways (``tracemalloc`` does not see torch's allocations):
  1. allocator level: the torch profiler's memory timeline (``profile_memory=True``,
     every CPU tensor allocation and free), peak minus the value at the start;
  2. operating-system level: each layer runs in a fresh subprocess (started before the
     timing runs), first once on a tenth of the edges (so that the library code the call
     touches is already resident), and we report the growth of the peak resident set size
     (``resource.getrusage(...).ru_maxrss``) over the resident size just before the full
     call, with ``MALLOC_MMAP_THRESHOLD_=65536`` so that every tensor larger than 64 KiB
     is its own ``mmap`` and is returned to the system when freed;
* on CUDA, ``torch.cuda.max_memory_allocated`` over the call.

Run:  .venv/bin/python benchmarks/bench_point_conv.py [--device cpu|cuda] [--repeats 7] [--threads 0]
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys

import torch

from minequi import Irreps, PointConv
from minequi.graph import radius_graph, scatter_sum
from timing import median_times  # benchmarks/timing.py

IRREPS, SH = "32x0e+32x1o+32x2e", "0e+1o+2e"
N_NODES, N_EDGES = 1000, 20_000


class E3nnPointConv(torch.nn.Module):
    """The same layer from e3nn 0.6 parts; radial embedding and MLP shared with ``ours``."""

    def __init__(self, ours):
        super().__init__()
        from e3nn import o3

        self.o3 = o3
        self.ours = ours
        ins = [(p.i_in1, p.i_in2, p.i_out, p.mode, True) for p in ours.tp.paths]
        self.tp = o3.TensorProduct(str(ours.irreps_in), str(ours.irreps_sh), str(ours.irreps_out), ins,
                                   shared_weights=False, internal_weights=False)
        self.sign = None  # per-weight signs, only for the correctness check

    def forward(self, x, pos, edge_index):
        src, dst = edge_index[0], edge_index[1]
        edge_vec = pos[src] - pos[dst]  # [E, 3]
        r = edge_vec.norm(dim=1)  # [E]
        sh = self.o3.spherical_harmonics(str(self.ours.irreps_sh), edge_vec, normalize=True,
                                         normalization="component")  # [E, 9]
        emb = self.ours.basis(r) * (self.ours.envelope(r) * self.ours.basis_scale)[:, None]  # [E, num_basis]
        w = self.ours.radial(emb)  # [E, weight_numel]
        if self.sign is not None:
            w = w * self.sign
        msg = self.tp(x[src], sh, w)  # [E, dim_out]
        return scatter_sum(msg, dst, x.shape[0]) / math.sqrt(self.ours.avg_num_neighbors)  # [N, dim_out]


def e3nn_signs(ours):
    """s(l1, l2, l3) per weight, with clebsch_gordan = s * sqrt(2 l3 + 1) * o3.wigner_3j."""
    from e3nn import o3

    from minequi.clebsch_gordan import clebsch_gordan

    signs = []
    for p in ours.tp.paths:
        W = o3.wigner_3j(p.l1, p.l2, p.l3, dtype=torch.float64)
        s = 1.0 if (clebsch_gordan(p.l1, p.l2, p.l3) * W).sum() > 0 else -1.0
        signs += [s] * (p.weight_stop - p.weight_start)
    return torch.tensor(signs)


def make_problem(device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(N_NODES, 3, generator=g, dtype=torch.float64) * 10.0  # [N, 3]
    d = torch.cdist(pos, pos)  # [N, N]
    d.fill_diagonal_(math.inf)
    cutoff = float(d.reshape(-1).kthvalue(N_EDGES).values) * (1 + 1e-9)  # N_EDGES ordered pairs closer than this
    edge_index = radius_graph(pos, cutoff)
    x = torch.randn(N_NODES, Irreps(IRREPS).dim, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    ours = PointConv(IRREPS, SH, IRREPS, num_basis=8, cutoff=cutoff, radial_hidden=16,
                     avg_num_neighbors=edge_index.shape[1] / N_NODES)
    return (ours.to(device=device, dtype=dtype), x.to(device, dtype), pos.to(device, dtype),
            edge_index.to(device), cutoff)


def fwd_bwd(layer, x, pos, edge_index, grad_out):
    xg = x.detach().requires_grad_(True)
    pg = pos.detach().requires_grad_(True)
    layer(xg, pg, edge_index).backward(grad_out)


def _current_rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(which):
    """Run in a fresh process: peak RSS growth [bytes] of one forward+backward of one layer."""
    ours, x, pos, edge_index, _ = make_problem("cpu")
    layer = ours if which == "minequi" else E3nnPointConv(ours)
    grad_out = torch.randn(N_NODES, Irreps(IRREPS).dim)
    # warm up on 1/10 of the edges first, so that the code pages the call touches (shared
    # libraries count in the RSS) are resident before we take the baseline
    fwd_bwd(layer, x, pos, edge_index[:, : N_EDGES // 10], grad_out)
    before = _current_rss()
    fwd_bwd(layer, x, pos, edge_index, grad_out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    print(json.dumps({"peak_growth": peak - before}))


def cpu_peak_memory(which, threads):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--memory-child", which, "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth"]


def profiler_peak_memory(layer, x, pos, edge_index, grad_out):
    """Peak of the torch profiler's CPU memory timeline over one forward+backward [bytes]."""
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        fwd_bwd(layer, x, pos, edge_index, grad_out)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # export_memory_timeline is marked deprecated
        path = os.path.join(tmp, "timeline.raw.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)
    totals = [sum(s) for s in sizes]
    return max(totals) - totals[0]


def cuda_peak_memory(layer, x, pos, edge_index, grad_out):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fwd_bwd(layer, x, pos, edge_index, grad_out)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--memory-child", choices=["minequi", "e3nn"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child)
    device = torch.device(args.device)
    if device.type == "cpu":  # fresh processes first, before this one has run anything large
        rss = {which: cpu_peak_memory(which, args.threads) for which in ("e3nn", "minequi")}

    # correctness first (float64): same outputs up to the documented per-path signs
    ours64, x64, pos64, ei64, _ = make_problem(device, torch.float64)
    torch.set_default_dtype(torch.float64)  # e3nn builds its Wigner 3j buffers in the default dtype
    theirs64 = E3nnPointConv(ours64).to(device)
    torch.set_default_dtype(torch.float32)
    theirs64.sign = e3nn_signs(ours64).to(device, torch.float64)
    with torch.no_grad():
        y_ours, y_theirs = ours64(x64, pos64, ei64), theirs64(x64, pos64, ei64)
    err = float((y_ours - y_theirs).abs().max())
    assert ours64.tp.weight_numel == theirs64.tp.weight_numel
    print(f"check (float64): weights per edge {ours64.tp.weight_numel} (both), "
          f"max |minequi - e3nn| = {err:.1e} (output scale {float(y_ours.abs().max()):.1f})")
    assert err < 1e-10, "minequi and e3nn point convolutions disagree"

    ours, x, pos, edge_index, cutoff = make_problem(device)
    theirs = E3nnPointConv(ours).to(device)
    grad_out = torch.randn(N_NODES, Irreps(IRREPS).dim, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn):
        def run():
            fn()
            sync()
        return run

    print(f"\ntorch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, float32, "
          f"median of {args.repeats} interleaved repeats")
    print(f"{IRREPS} (x) {SH} -> {IRREPS}, 'uvu', {len(ours.tp.paths)} paths; "
          f"{N_NODES} nodes, {edge_index.shape[1]} edges (cutoff {cutoff:.3f})")
    header = f"{'what':<24}{'e3nn':>12}{'minequi':>12}{'e3nn/minequi':>14}"
    print(header)
    print("-" * len(header))
    with torch.no_grad():
        t_e3nn, t_ours = median_times([timed(lambda: theirs(x, pos, edge_index)),
                                       timed(lambda: ours(x, pos, edge_index))], args.repeats)
    print(f"{'forward [ms]':<24}{1e3 * t_e3nn:>12.1f}{1e3 * t_ours:>12.1f}{t_e3nn / t_ours:>14.2f}")
    t_e3nn, t_ours = median_times([timed(lambda: fwd_bwd(theirs, x, pos, edge_index, grad_out)),
                                   timed(lambda: fwd_bwd(ours, x, pos, edge_index, grad_out))], args.repeats)
    print(f"{'forward+backward [ms]':<24}{1e3 * t_e3nn:>12.1f}{1e3 * t_ours:>12.1f}{t_e3nn / t_ours:>14.2f}")

    rows = []
    if device.type == "cuda":
        rows.append(("torch.cuda.max_memory_allocated", cuda_peak_memory(theirs, x, pos, edge_index, grad_out),
                     cuda_peak_memory(ours, x, pos, edge_index, grad_out)))
    else:
        rows.append(("torch profiler memory timeline", profiler_peak_memory(theirs, x, pos, edge_index, grad_out),
                     profiler_peak_memory(ours, x, pos, edge_index, grad_out)))
        rows.append(("peak RSS growth, fresh process", rss["e3nn"], rss["minequi"]))
    for how, m_e3nn, m_ours in rows:
        print(f"{'peak memory f+b [MB]':<24}{m_e3nn / 2**20:>12.1f}{m_ours / 2**20:>12.1f}"
              f"{m_e3nn / m_ours:>14.2f}   ({how})")


if __name__ == "__main__":
    main()
