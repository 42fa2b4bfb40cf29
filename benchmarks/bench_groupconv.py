"""Benchmark: minequi's p4 / p4m GroupConv2d vs escnn's R2Conv vs a plain torch Conv2d.

Regular -> regular, 8 fields in and out, kernel 5, 32 x 32 images, batch 16 ("same" padding).
The plain Conv2d has the same channel counts (8 |G| in and out) and is the floor for this approach:
minequi's layer IS that convolution plus a gather that builds the rotated filter bank.

Two measurements, each the median of many repeats (the machine may be shared):
* eval forward: ``model.eval()`` under ``torch.no_grad()`` (minequi and escnn cache the expanded filter);
* train step: forward + backward of ``out.square().mean()`` in train mode (filter transform included).

Targets (from the issue): minequi train step <= 1.15 x plain conv and no slower than escnn;
minequi eval forward <= 1.1 x plain conv.

Usage: python benchmarks/bench_groupconv.py [--repeats 20] [--threads N] [--device cpu|cuda]
"""
import argparse
import statistics
import time
import warnings

import torch

from minequi.groupconv import GroupConv2d

try:
    import escnn.group._numerical as _escnn_numerical
    from escnn import gspaces
    from escnn import nn as enn

    # escnn 1.0.11 passes np.matrix to scikit-learn's randomized_svd, which current scikit-learn
    # rejects while building D4's basis; None selects escnn's exact scipy fallback.
    _escnn_numerical.randomized_svd = None
    warnings.filterwarnings("ignore", module="escnn")
except ImportError:  # pragma: no cover
    enn = None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(models, x_of, repeats, device, warmup=3):
    """Median eval-forward and train-step times of each model, measured round-robin.

    Interleaving the models (one call of each per round) exposes them all to the same background
    load, which matters on a shared machine more than the number of repeats.
    """
    evals, trains = {name: [] for name in models}, {name: [] for name in models}

    def eval_call(name, model):
        model.eval()
        with torch.no_grad():
            model(x_of[name])

    def train_call(name, model):
        model.train()
        for p in model.parameters():
            p.grad = None
        model(x_of[name]).square().mean().backward()

    for call, store in ((eval_call, evals), (train_call, trains)):
        for _ in range(warmup):
            for name, model in models.items():
                call(name, model)
        for _ in range(repeats):
            for name, model in models.items():
                sync(device)
                t0 = time.perf_counter()
                call(name, model)
                sync(device)
                store[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(evals[name]), statistics.median(trains[name])) for name in models}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    B, fields, k, size = 16, 8, 5, 32
    print(f"device={device}, threads={torch.get_num_threads()}, batch={B}, fields={fields}, kernel={k}, "
          f"{size}x{size}, median of {args.repeats} repeats")
    print(f"{'group':6s} {'model':22s} {'eval fwd (ms)':>14s} {'train step (ms)':>16s} {'eval / plain':>13s} {'train / plain':>14s}")
    for group in ("p4", "p4m"):
        n = 4 if group == "p4" else 8
        x5 = torch.randn(B, fields, n, size, size, device=device)
        x4 = x5.reshape(B, fields * n, size, size)
        models = {"torch Conv2d (floor)": torch.nn.Conv2d(fields * n, fields * n, k, padding=k // 2).to(device),
                  "minequi GroupConv2d": GroupConv2d(fields, fields, k, group=group, padding=k // 2).to(device)}
        x_of = {"torch Conv2d (floor)": x4, "minequi GroupConv2d": x5}
        if enn is not None:
            gs = gspaces.rot2dOnR2(N=4) if group == "p4" else gspaces.flipRot2dOnR2(N=4)
            ft = enn.FieldType(gs, fields * [gs.regular_repr])

            class Wrap(torch.nn.Module):  # escnn takes GeometricTensors: wrap the call
                def __init__(self):
                    super().__init__()
                    self.conv = enn.R2Conv(ft, ft, k, padding=k // 2)

                def forward(self, x):
                    return self.conv(enn.GeometricTensor(x, ft)).tensor

            models["escnn R2Conv"] = Wrap().to(device)
            x_of["escnn R2Conv"] = x4
        times = measure(models, x_of, args.repeats, device)
        rows = [(name, *times[name]) for name in models]
        plain_eval, plain_train = rows[0][1], rows[0][2]
        for name, te, tt in rows:
            print(f"{group:6s} {name:22s} {te * 1e3:14.2f} {tt * 1e3:16.2f} {te / plain_eval:13.3f} {tt / plain_train:14.3f}")
        if enn is not None:
            print(f"{group:6s} minequi / escnn: eval {rows[1][1] / rows[2][1]:.3f}, train {rows[1][2] / rows[2][2]:.3f}")


if __name__ == "__main__":
    main()
