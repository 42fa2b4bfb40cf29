"""Spherical harmonics and Wigner D: minequi vs e3nn, side by side in one process; torch.compile.

1. For l_max = 2, 4, 6 on 100,000 points (all l = 0..l_max concatenated, "component"
   normalisation) we time the forward pass of both libraries, median of several
   interleaved repeats, and print the ratio e3nn / minequi (> 1 means minequi is faster).
   The same for Wigner D matrices of 10,000 rotations (``--rotations``).
2. torch.compile: minequi's spherical harmonics compiled with ``torch.compile(fullgraph=True)``
   (default Inductor backend) against the same function in eager mode, forward + backward
   (the gradient with respect to the points, as for forces), float32; we print the one-off
   compile time and the ratio compiled / eager (< 1 means compiling pays).

Run:  .venv/bin/python benchmarks/bench_spherical_harmonics.py [--repeats 15] [--threads 0]
      [--device cpu|cuda] [--no-compile] [--rotations 10000]
"""
import argparse
import time

import torch

from minequi.so3 import wigner_D
from minequi.spherical_harmonics import spherical_harmonics
from minequi.testing import rand_rotation
from timing import median_times  # benchmarks/timing.py


def synced(fn, device):
    """``fn`` followed by a device synchronisation, so that wall time covers the GPU work."""
    if device.type != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize(device))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rotations", type=int, default=10_000, help="batch of the Wigner D rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time torch.compile (Inductor; about 30 s of compilation per row on 2 cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    from e3nn import o3  # benchmark-only dependency

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {name}, {args.points} points, median of {args.repeats} repeats")
    header = f"{'what':<28}{'dtype':<9}{'e3nn [ms]':>11}{'minequi [ms]':>14}{'e3nn/minequi':>14}"
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(args.points, 3, generator=gen).to(dtype=dtype, device=dev)
        for lmax in (2, 4, 6):
            ls = list(range(lmax + 1))
            ref = o3.spherical_harmonics(ls, x, normalize=True, normalization="component")
            ours = spherical_harmonics(ls, x, normalize=True, normalization="component")
            tol = 1e-4 if dtype == torch.float32 else 1e-10
            assert (ref - ours).abs().max() < tol, "minequi and e3nn disagree"
            t_e3nn, t_ours = median_times(
                [synced(lambda: o3.spherical_harmonics(ls, x, True, "component"), dev),
                 synced(lambda: spherical_harmonics(ls, x, True, "component"), dev)], args.repeats)
            what = f"SH l=0..{lmax}"
            print(f"{what:<28}{str(dtype)[6:]:<9}{1e3 * t_e3nn:>11.2f}{1e3 * t_ours:>14.2f}{t_e3nn / t_ours:>14.2f}")

    # Wigner D for a batch of rotations (no target; e3nn goes through Euler angles)
    R = rand_rotation(args.rotations, generator=gen).to(dev)
    for l in (2, 4, 8):
        irrep = o3.Irrep(l, 1)
        ref = irrep.D_from_matrix(R)
        assert (ref - wigner_D(l, R)).abs().max() < 1e-5  # e3nn computes parts in the default dtype (float32)
        t_e3nn, t_ours = median_times([synced(lambda: irrep.D_from_matrix(R), dev),
                                       synced(lambda: wigner_D(l, R), dev)],
                                      max(3, args.repeats // 3), warmup=1)
        what = f"wigner_D l={l}, {args.rotations // 1000}k rotations"
        print(f"{what:<28}{'float64':<9}{1e3 * t_e3nn:>11.2f}{1e3 * t_ours:>14.2f}{t_e3nn / t_ours:>14.2f}")

    if not args.compile:
        return
    print("\ntorch.compile(fullgraph=True), Inductor: forward + backward (gradient w.r.t. the points), float32")
    header = f"{'what':<28}{'compile [s]':>12}{'eager [ms]':>12}{'compiled [ms]':>15}{'compiled/eager':>16}"
    print(header)
    print("-" * len(header))
    x = torch.randn(args.points, 3, generator=gen).to(device=dev)
    for lmax in (2, 4):  # (l_max = 6 takes minutes of Inductor compilation on two cores)
        ls = list(range(lmax + 1))
        eager = lambda x: spherical_harmonics(ls, x)  # noqa: E731
        torch._dynamo.reset()
        compiled = torch.compile(eager, fullgraph=True)
        w = torch.randn(args.points, (lmax + 1) ** 2, generator=gen).to(device=dev)

        def step(f):
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad((f(xg) * w).sum(), xg)
            return g

        t0 = time.perf_counter()
        g_c = step(compiled)  # the first call compiles forward and backward
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_compile = time.perf_counter() - t0
        assert (g_c - step(eager)).abs().max() < 1e-3, "compiled and eager gradients disagree"
        t_eager, t_comp = median_times([synced(lambda: step(eager), dev), synced(lambda: step(compiled), dev)],
                                       args.repeats)
        what = f"SH l=0..{lmax} fwd+bwd"
        print(f"{what:<28}{t_compile:>12.1f}{1e3 * t_eager:>12.2f}{1e3 * t_comp:>15.2f}{t_comp / t_eager:>16.2f}")


if __name__ == "__main__":
    main()
