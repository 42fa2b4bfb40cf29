"""Fully connected tensor product: minequi vs e3nn, side by side in one process.

``16x0e+16x1o+16x2e (x) 0e+1o+2e -> 16x0e+16x1o+16x2e`` on a batch of 10,000
(float32), with shared (internal) weights and with per-sample weights, forward
and forward+backward.  Both modules are used as users call them by default
(e3nn's ``FullyConnectedTensorProduct`` with its default torch.fx code generation).
Before timing we check that both have the same number of weights and output shape
and that both are O(3)-equivariant (float64, Haar samples with reflections).
Prints medians of interleaved repeats and the ratio e3nn / minequi (> 1: minequi faster).
Run:  .venv/bin/python benchmarks/bench_tensor_product.py [--batch 10000] [--repeats 9] [--threads 0]
"""
import argparse

import torch

from minequi import Irreps, TensorProduct
from minequi.testing import equivariance_error, haar_o3
from timing import median_times  # benchmarks/timing.py

IN1, IN2, OUT = "16x0e+16x1o+16x2e", "0e+1o+2e", "16x0e+16x1o+16x2e"


def equivariance(tp, per_sample):
    """Max O(3) equivariance error of tp in float64 (minequi's D matrices; e3nn uses the same basis)."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(16, Irreps(IN1).dim, dtype=torch.float64, generator=g)
    x2 = torch.randn(16, Irreps(IN2).dim, dtype=torch.float64, generator=g)
    D1, D2, Do = (lambda Q, i=i: Irreps(i).D_from_matrix(Q) for i in (IN1, IN2, OUT))
    if per_sample:
        w = torch.randn(16, tp.weight_numel, dtype=torch.float64, generator=g)
        return equivariance_error(tp, (x1, x2, w), haar_o3,
                                  act_in=lambda Q, xs: (xs[0] @ D1(Q).T, xs[1] @ D2(Q).T, xs[2]),
                                  act_out=lambda Q, y: y @ Do(Q).T)
    return equivariance_error(tp, (x1, x2), haar_o3,
                              act_in=lambda Q, xs: (xs[0] @ D1(Q).T, xs[1] @ D2(Q).T),
                              act_out=lambda Q, y: y @ Do(Q).T)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from e3nn import o3  # benchmark-only dependency

    torch.manual_seed(0)
    ours = {False: TensorProduct(IN1, IN2, OUT), True: TensorProduct(IN1, IN2, OUT, shared_weights=False)}
    theirs = {False: o3.FullyConnectedTensorProduct(IN1, IN2, OUT),
              True: o3.FullyConnectedTensorProduct(IN1, IN2, OUT, shared_weights=False, internal_weights=False)}

    # sanity checks before timing
    for per_sample in (False, True):
        a, b = ours[per_sample], theirs[per_sample]
        assert a.weight_numel == b.weight_numel, (a.weight_numel, b.weight_numel)
        err_ours = equivariance(a, per_sample)
        err_theirs = equivariance(b, per_sample)
        kind = "per-sample" if per_sample else "shared"
        print(f"{kind:>10} weights: weight_numel {a.weight_numel} (both); equivariance error (float64): "
              f"minequi {err_ours:.1e}, e3nn {err_theirs:.1e}")
        assert err_ours < 1e-10, "minequi tensor product is not equivariant"
        assert err_theirs < 1e-5, "e3nn tensor product is not equivariant"  # e3nn builds its CG in float32

    B = args.batch
    x1 = torch.randn(B, Irreps(IN1).dim)
    x2 = torch.randn(B, Irreps(IN2).dim)
    w = torch.randn(B, ours[True].weight_numel)
    grad_out = torch.randn(B, Irreps(OUT).dim)
    for per_sample in (False, True):
        args_ = (x1, x2, w) if per_sample else (x1, x2)
        assert ours[per_sample](*args_).shape == theirs[per_sample](*args_).shape == (B, Irreps(OUT).dim)

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {B}, float32, "
          f"median of {args.repeats} interleaved repeats")
    print(f"{IN1} (x) {IN2} -> {OUT}")
    header = f"{'what':<38}{'e3nn [ms]':>11}{'minequi [ms]':>14}{'e3nn/minequi':>14}"
    print(header)
    print("-" * len(header))
    xg = x1.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)
    for per_sample in (False, True):
        kind = "per-sample" if per_sample else "shared"

        def fwd(tp):
            return lambda: tp(x1, x2, w) if per_sample else tp(x1, x2)

        def fwd_bwd(tp):
            def run():
                y = tp(xg, x2, wg) if per_sample else tp(xg, x2)
                y.backward(grad_out)
            return run

        for what, make in (("forward", fwd), ("forward+backward", fwd_bwd)):
            t_e3nn, t_ours = median_times([make(theirs[per_sample]), make(ours[per_sample])], args.repeats)
            name = f"{what}, {kind} weights"
            print(f"{name:<38}{1e3 * t_e3nn:>11.1f}{1e3 * t_ours:>14.1f}{t_e3nn / t_ours:>14.2f}")


if __name__ == "__main__":
    main()
