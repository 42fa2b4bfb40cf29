"""The charged n-body benchmark of EGNN (Satorras, Hoogeboom & Welling, 2021) at the paper's scale.

Chapter 12 of the book trains small models on a few hundred trajectories; this script trains
EGNN with the paper's settings and prints the test MSE (paper, Table 2: EGNN 0.0071, TFN 0.0155,
Linear 0.0819). It is not run by the tests.

Data (as the authors' ``n_body_system/dataset/synthetic_sim.py`` and ``dataset_nbody.py``,
"nbody_small"): 5 particles with charges +-1, Coulomb forces with each component clipped to
[-100, 100], step 0.001, no box; initial positions N(0, 1), speeds 0.5 in random directions;
frames every 100 steps; input = frame 30 (positions, velocities, charges), target = positions at
frame 40 (1,000 steps later). 3,000 training, 2,000 validation and 2,000 test trajectories. The
simulator is the one of chapter 12 (numpy, bit-for-bit reproducible); our random streams differ
from the authors', so the data are a fresh draw from the same distribution.

Model and training (the authors' ``main_nbody.py`` defaults for ``egnn_vel``): EGNN with the
velocity update (eq. 7), 4 layers of width 64, SiLU, residual node updates, mean coordinate
aggregation; node feature |v_i|, edge attributes [q_i q_j, |x_i - x_j|^2 at the input]; Adam,
learning rate 5e-4, weight decay 1e-12, batch 100 (last incomplete batch dropped), MSE loss;
validation and test every 5 epochs; the reported number is the test MSE at the best validation
MSE. The paper trains 10,000 epochs; ``--epochs`` sets fewer (the result is then labelled).

    python benchmarks/nbody_paper_scale.py --device cuda --epochs 1000
    python benchmarks/nbody_paper_scale.py --epochs 20 --train 3000      # a short CPU run

``--model tfn|mlp|linear`` trains the other chapter-12 models with the same data and loop.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import minequi
from minequi import EGNN, TensorFieldNetwork

PAPER = {"egnn": 0.0071, "tfn": 0.0155, "linear": 0.0819}


# ---------------------------------------------------------------------------------------- data
def coulomb_forces(x, q, max_force=100.0):
    """Forces [n, 3, ...] on charges q [n, ...] at positions x [n, 3, ...] (system axes last)."""
    n = x.shape[0]
    F = np.zeros_like(x)
    for i in range(n):
        for j in range(i + 1, n):
            d = x[i] - x[j]  # [3, ...]
            r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]  # [...]
            f = (q[i] * q[j] / (r2 * np.sqrt(r2))) * d  # [3, ...] force of j on i
            F[i] += f
            F[j] -= f
    return np.clip(F, -max_force, max_force)


def simulate_charged(num_systems, n=5, frame_in=30, frame_out=40, save_every=100, dt=1e-3, seed=0):
    """(x, v at frame_in [S, n, 3], charges [S, n], x at frame_out [S, n, 3]); frame k = step (k+1)*save_every."""
    rng = np.random.default_rng(seed)
    q = rng.choice([-1.0, 1.0], size=(num_systems, n))  # [S, n]
    x = rng.standard_normal((num_systems, n, 3))  # [S, n, 3]
    v = rng.standard_normal((num_systems, n, 3))
    v = 0.5 * v / np.linalg.norm(v, axis=-1, keepdims=True)
    q, x, v = q.T.copy(), x.transpose(1, 2, 0).copy(), v.transpose(1, 2, 0).copy()  # system axis last
    v = v + dt * coulomb_forces(x, q)
    saved = {}
    for step in range(1, (frame_out + 1) * save_every + 1):
        x = x + dt * v
        if step == (frame_in + 1) * save_every:
            saved["x"], saved["v"] = x.transpose(2, 0, 1).copy(), v.transpose(2, 0, 1).copy()
        if step == (frame_out + 1) * save_every:
            saved["y"] = x.transpose(2, 0, 1).copy()
        v = v + dt * coulomb_forces(x, q)
    return saved["x"], saved["v"], q.T.copy(), saved["y"]


def make_split(num_systems, seed, device, dtype):
    x, v, q, y = simulate_charged(num_systems, seed=seed)
    return [torch.tensor(a, dtype=dtype, device=device) for a in (x, v, q, y)]


# ---------------------------------------------------------------------------------------- models
def complete_graph(num_systems, n, device, self_loops=False):
    """edge_index [2, E]: disjoint complete graphs of n particles (row 0 source j, row 1 target i)."""
    batch = torch.arange(num_systems, device=device).repeat_interleave(n)  # [S n]
    return minequi.complete_graph(num_systems * n, batch, loop=self_loops)  # [2, E]


class Model(torch.nn.Module):
    """predict(x [S, n, 3], v [S, n, 3], q [S, n]) -> positions [S, n, 3] for one of the benchmark models."""

    def __init__(self, kind, hidden=64, num_layers=4):
        super().__init__()
        self.kind = kind
        if kind == "egnn":
            self.net = EGNN(1, hidden, 1, num_layers=num_layers, edge_features=2, velocity=True)
        elif kind == "tfn":
            self.net = TensorFieldNetwork("2x0e+1x1o", f"{hidden // 2}x0e+{hidden // 4}x1o+{hidden // 4}x1e", "1x1o",
                                          num_layers=num_layers, lmax=1, cutoff=10.0, avg_num_neighbors=5.0)
            with torch.no_grad():
                self.net.readout.weight.mul_(0.01)
        elif kind == "mlp":
            self.net = torch.nn.Sequential(torch.nn.Linear(35, 4 * hidden), torch.nn.SiLU(),
                                           torch.nn.Linear(4 * hidden, 4 * hidden), torch.nn.SiLU(),
                                           torch.nn.Linear(4 * hidden, 15))
        elif kind == "linear":
            self.alpha = torch.nn.Parameter(torch.zeros(()))
        else:
            raise ValueError(f"unknown model {kind!r}")

    def forward(self, x, v, q):
        S, n, _ = x.shape
        if self.kind == "linear":
            return x + self.alpha * v
        if self.kind == "mlp":
            return x + self.net(torch.cat([x.reshape(S, -1), v.reshape(S, -1), q], dim=1)).reshape(S, n, 3)
        xf, vf, qf = x.reshape(-1, 3), v.reshape(-1, 3), q.reshape(-1)
        if self.kind == "egnn":
            ei = complete_graph(S, n, x.device)
            d2 = (xf[ei[1]] - xf[ei[0]]).square().sum(dim=1)  # [E]
            edge_attr = torch.stack([qf[ei[0]] * qf[ei[1]], d2], dim=1)  # [E, 2]
            _, x_new, _ = self.net(vf.norm(dim=1, keepdim=True), xf, ei, edge_attr, v=vf)
            return x_new.reshape(S, n, 3)
        h = torch.cat([qf[:, None], vf.norm(dim=1, keepdim=True), vf], dim=1)  # [N, 5] = 2x0e+1x1o
        return x + self.net(h, xf, complete_graph(S, n, x.device, self_loops=True)).reshape(S, n, 3)


# ---------------------------------------------------------------------------------------- training
def evaluate(model, split, batch_size=1000):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range(0, split[0].shape[0], batch_size):
            x, v, q, y = (a[k:k + batch_size] for a in split)
            total += float((model(x, v, q) - y).square().mean()) * x.shape[0]
            count += x.shape[0]
    model.train()
    return total / count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="egnn", choices=["egnn", "tfn", "mlp", "linear"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=10000, help="the paper: 10,000")
    p.add_argument("--train", type=int, default=3000, help="training trajectories (paper: 3,000)")
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight_decay", type=float, default=1e-12)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=0, help="0: 4 for EGNN (the paper), 2 for the TFN")
    p.add_argument("--test_interval", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32

    t0 = time.time()
    train = make_split(args.train, 100, device, dtype)
    val = make_split(args.val, 200, device, dtype)
    test = make_split(args.test, 300, device, dtype)
    print(f"simulated {args.train} / {args.val} / {args.test} trajectories in {time.time() - t0:.1f} s")

    torch.manual_seed(args.seed)
    layers = args.layers or (2 if args.model == "tfn" else 4)
    model = Model(args.model, args.hidden, layers).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(f"{args.model}: {n_params} parameters, device {device}, {args.epochs} epochs of "
          f"{args.train // args.batch_size} batches of {args.batch_size}")

    gen = torch.Generator().manual_seed(args.seed)
    best = (float("inf"), float("inf"), -1)  # (val, test, epoch)
    t0 = time.time()
    for epoch in range(args.epochs):
        perm = torch.randperm(args.train, generator=gen).to(device)
        for k in range(0, args.train - args.batch_size + 1, args.batch_size):  # drop_last, as the reference
            idx = perm[k:k + args.batch_size]
            x, v, q, y = (a[idx] for a in train)
            loss = (model(x, v, q) - y).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % args.test_interval == 0 or epoch == args.epochs - 1:
            val_mse, test_mse = evaluate(model, val), evaluate(model, test)
            if val_mse < best[0]:
                best = (val_mse, test_mse, epoch)
            print(f"epoch {epoch:5d}  train batch MSE {float(loss.detach()):.5f}  val {val_mse:.5f}  test {test_mse:.5f}  "
                  f"best test {best[1]:.5f} (epoch {best[2]})  {time.time() - t0:.0f} s", flush=True)
    label = "" if args.epochs >= 10000 and args.train == 3000 else \
        f"  [REDUCED RUN: {args.epochs} epochs, {args.train} training trajectories; the paper: 10,000 and 3,000]"
    print(f"\n{args.model}: test MSE at the best validation epoch ({best[2]}): {best[1]:.4f}"
          f"  (paper: {PAPER.get(args.model, 'n/a')}){label}")
    print(f"training time {time.time() - t0:.0f} s on {device}")


if __name__ == "__main__":
    main()
