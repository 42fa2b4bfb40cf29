"""Tensor products: minequi vs e3nn, side by side in one process; and torch.compile vs eager.

``16x0e+16x1o+16x2e (x) 0e+1o+2e -> 16x0e+16x1o+16x2e`` on a batch of 10,000 (float32):

* fully connected ("uvw", every allowed path), with shared (internal) weights and with
  per-sample weights, forward and forward+backward, against e3nn's
  ``FullyConnectedTensorProduct`` (its default torch.fx code generation);
* depthwise ("uvu", every allowed path with ``mul_out == mul_in1``) with per-sample
  weights (one weight vector per edge, as in a point convolution), against e3nn's
  ``o3.TensorProduct`` with the same instructions and ``shared_weights=False``;
* ``torch.compile`` (default backend, ``fullgraph=True``) against eager minequi,
  forward+backward, for the fully connected product with shared and per-sample weights
  and the depthwise one (skip with ``--no-compile``; compiling takes minutes on 2 cores).

Before timing we check that both libraries have the same number of weights and output
shape and that both are O(3)-equivariant (float64, Haar samples with reflections), and
that the compiled modules match eager.  Prints medians of interleaved repeats and the
ratio e3nn / minequi (> 1: minequi faster) or compiled / eager (< 1: compiling pays).
Run:  .venv/bin/python benchmarks/bench_tensor_product.py [--device cpu|cuda] [--batch 10000]
      [--repeats 9] [--threads 0] [--no-compile]
"""
import argparse

import torch

from minequi import Irreps, TensorProduct
from minequi.testing import equivariance_error, haar_o3
from timing import median_times  # benchmarks/timing.py

IN1, IN2, OUT = "16x0e+16x1o+16x2e", "0e+1o+2e", "16x0e+16x1o+16x2e"


def uvu_instructions():
    e1, e2, eo = Irreps(IN1), Irreps(IN2), Irreps(OUT)
    return [(i1, i2, io, "uvu") for i1, (m1, r1) in enumerate(e1) for i2, (_, r2) in enumerate(e2)
            for io, (mo, ro) in enumerate(eo)
            if m1 == mo and r1.p * r2.p == ro.p and abs(r1.l - r2.l) <= ro.l <= r1.l + r2.l]


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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from e3nn import o3  # benchmark-only dependency

    torch.manual_seed(0)
    uvu = uvu_instructions()
    # (name, minequi module, e3nn module, per-sample weights)
    cases = [
        ("uvw, shared weights", TensorProduct(IN1, IN2, OUT), o3.FullyConnectedTensorProduct(IN1, IN2, OUT), False),
        ("uvw, per-sample weights", TensorProduct(IN1, IN2, OUT, shared_weights=False),
         o3.FullyConnectedTensorProduct(IN1, IN2, OUT, shared_weights=False, internal_weights=False), True),
        ("uvu, per-sample weights", TensorProduct(IN1, IN2, OUT, instructions=uvu, shared_weights=False),
         o3.TensorProduct(IN1, IN2, OUT, [ins + (True,) for ins in uvu], shared_weights=False,
                          internal_weights=False), True),
    ]

    # sanity checks before timing
    for name, a, b, per_sample in cases:
        assert a.weight_numel == b.weight_numel, (name, a.weight_numel, b.weight_numel)
        err_ours, err_theirs = equivariance(a, per_sample), equivariance(b, per_sample)
        print(f"{name:<24}: weight_numel {a.weight_numel} (both); equivariance error (float64): "
              f"minequi {err_ours:.1e}, e3nn {err_theirs:.1e}")
        assert err_ours < 1e-10, "minequi tensor product is not equivariant"
        assert err_theirs < 1e-5, "e3nn tensor product is not equivariant"  # e3nn builds its CG in float32

    B = args.batch
    cases = [(name, a.to(device), b.to(device), per_sample) for name, a, b, per_sample in cases]
    x1 = torch.randn(B, Irreps(IN1).dim, device=device)
    x2 = torch.randn(B, Irreps(IN2).dim, device=device)
    weights = {name: torch.randn(B, a.weight_numel, device=device) for name, a, _, per in cases if per}
    grad_out = torch.randn(B, Irreps(OUT).dim, device=device)
    xg = x1.clone().requires_grad_(True)
    wg = {name: w.clone().requires_grad_(True) for name, w in weights.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fwd(tp, name, per_sample):
        def run():
            tp(x1, x2, weights[name]) if per_sample else tp(x1, x2)
            sync()
        return run

    def fwd_bwd(tp, name, per_sample):
        def run():
            y = tp(xg, x2, wg[name]) if per_sample else tp(xg, x2)
            y.backward(grad_out)
            sync()
        return run

    for name, a, b, per_sample in cases:
        args_ = (x1, x2, weights[name]) if per_sample else (x1, x2)
        assert a(*args_).shape == b(*args_).shape == (B, Irreps(OUT).dim)

    print(f"\ntorch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, batch {B}, "
          f"float32, median of {args.repeats} interleaved repeats")
    print(f"{IN1} (x) {IN2} -> {OUT}")
    header = f"{'what':<42}{'e3nn [ms]':>11}{'minequi [ms]':>14}{'e3nn/minequi':>14}"
    print(header)
    print("-" * len(header))
    for name, a, b, per_sample in cases:
        for what, make in (("forward", fwd), ("forward+backward", fwd_bwd)):
            t_e3nn, t_ours = median_times([make(b, name, per_sample), make(a, name, per_sample)], args.repeats)
            row = f"{what}, {name}"
            print(f"{row:<42}{1e3 * t_e3nn:>11.1f}{1e3 * t_ours:>14.1f}{t_e3nn / t_ours:>14.2f}")

    if args.no_compile:
        return
    print("\ntorch.compile(fullgraph=True, default backend) vs eager minequi, forward+backward")
    header = f"{'what':<42}{'eager [ms]':>11}{'compiled [ms]':>14}{'compiled/eager':>16}"
    print(header)
    print("-" * len(header))
    for name, a, _, per_sample in cases:
        compiled = torch.compile(a, fullgraph=True)
        args_ = (x1, x2, weights[name]) if per_sample else (x1, x2)
        err = float((compiled(*args_) - a(*args_)).detach().abs().max())  # compiles (and checks) once
        assert err < 1e-4, f"compiled {name} differs from eager by {err}"
        t_eager, t_comp = median_times([fwd_bwd(a, name, per_sample), fwd_bwd(compiled, name, per_sample)],
                                       args.repeats)
        row = f"forward+backward, {name}"
        print(f"{row:<42}{1e3 * t_eager:>11.1f}{1e3 * t_comp:>14.1f}{t_comp / t_eager:>16.2f}"
              f"   (max |compiled - eager| = {err:.1e})")


if __name__ == "__main__":
    main()
