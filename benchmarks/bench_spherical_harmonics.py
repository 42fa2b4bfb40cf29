"""Spherical harmonics and Wigner D: minequi vs e3nn, side by side in one process.

For l_max = 2, 4, 6 on 100,000 points (all l = 0..l_max concatenated, "component"
normalisation) we time the forward pass of both libraries, median of several
repeats, and print the ratio e3nn / minequi (> 1 means minequi is faster).
Run:  .venv/bin/python benchmarks/bench_spherical_harmonics.py [--repeats 15] [--threads 0]
"""
import argparse

import torch

from minequi.so3 import wigner_D
from minequi.spherical_harmonics import spherical_harmonics
from timing import median_times  # benchmarks/timing.py


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from e3nn import o3  # benchmark-only dependency

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.points} points, "
          f"median of {args.repeats} repeats")
    header = f"{'what':<28}{'dtype':<9}{'e3nn [ms]':>11}{'minequi [ms]':>14}{'e3nn/minequi':>14}"
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(args.points, 3, generator=gen).to(dtype)
        for lmax in (2, 4, 6):
            ls = list(range(lmax + 1))
            ref = o3.spherical_harmonics(ls, x, normalize=True, normalization="component")
            ours = spherical_harmonics(ls, x, normalize=True, normalization="component")
            tol = 1e-4 if dtype == torch.float32 else 1e-10
            assert (ref - ours).abs().max() < tol, "minequi and e3nn disagree"
            t_e3nn, t_ours = median_times(
                [lambda: o3.spherical_harmonics(ls, x, True, "component"),
                 lambda: spherical_harmonics(ls, x, True, "component")], args.repeats)
            name = f"SH l=0..{lmax}"
            print(f"{name:<28}{str(dtype)[6:]:<9}{1e3 * t_e3nn:>11.2f}{1e3 * t_ours:>14.2f}{t_e3nn / t_ours:>14.2f}")

    # Wigner D for a batch of rotations (no target; e3nn goes through Euler angles)
    from minequi.testing import rand_rotation

    R = rand_rotation(10_000, generator=gen)
    for l in (2, 4, 8):
        irrep = o3.Irrep(l, 1)
        ref = irrep.D_from_matrix(R)
        assert (ref - wigner_D(l, R)).abs().max() < 1e-5  # e3nn computes parts in the default dtype (float32)
        t_e3nn, t_ours = median_times([lambda: irrep.D_from_matrix(R), lambda: wigner_D(l, R)],
                                      max(3, args.repeats // 3), warmup=1)
        name = f"wigner_D l={l}, 10k rotations"
        print(f"{name:<28}{'float64':<9}{1e3 * t_e3nn:>11.2f}{1e3 * t_ours:>14.2f}{t_e3nn / t_ours:>14.2f}")


if __name__ == "__main__":
    main()
