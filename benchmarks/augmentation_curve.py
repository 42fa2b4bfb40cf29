"""Exact symmetry versus data augmentation on forces, at a larger scale than chapter 18.

Chapter 18 trains, for seconds, an MLP on the 39 coordinates of a 13-atom copper cluster with
K = 0, 1, 4, 16 random O(3) copies per training structure, and the equivariant
``InteratomicPotential``; this script runs the same comparison with more data, wider models,
longer training, larger budgets and several seeds, and prints mean +- standard deviation over
the seeds. It is not run by the tests.

Data (as chapter 18): distorted Cu13 icosahedra (each atom displaced by Gaussian noise with a
standard deviation drawn uniformly in [0.02, 0.1] A per structure, centred, fixed atom order),
labelled with ASE's EMT calculator; ``--pool`` training structures and ``--test`` test
structures, the test set presented in Haar-random O(3) orientations ("rotated") and as drawn
("upright").

Measured for every model (float64): the force MAE on both test sets, and the equivariance error,
the largest |F(Qx) - Q F(x)| over 16 test structures averaged over 16 Haar-random Q in O(3)
(``minequi.testing.equivariance_report``).

    python benchmarks/augmentation_curve.py                         # defaults below, CPU, ~minutes
    python benchmarks/augmentation_curve.py --steps 5000 --seeds 5 --budgets 0 1 4 16 64 256
    python benchmarks/augmentation_curve.py --quick                 # chapter-18 sizes, one seed

``--json FILE`` also writes the numbers. ``benchmarks/augmentation_curve.json`` holds one CPU run
(one thread, 2-core machine under load, 13 min; its flags are in ``args``): 300 training and 300
test structures, MLP 2 x 128 for 800 steps, the chapter's potential for 150 steps, two seeds.
Rotated-test force MAE (meV/A): MLP K = 0: 790, K = 1: 173, K = 4: 166, K = 16: 163, K = 64: 163
(upright 126 -> 160 as K grows); equivariant 48 with K = 0 and K = 16; equivariance error
3.3 -> 0.26 eV/A for the MLP, 9e-15 for the potential; learning curves (MLP K = 64 / equivariant)
n = 10: 178 / 51, 30: 167 / 52, 100: 163 / 47, 300: 163 / 48.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron

from minequi.potential import InteratomicPotential
from minequi.testing import equivariance_report, haar_o3, rand_orthogonal

N_ATOMS = 13


def rattled_clusters(n, seed):
    """Positions [n, 13, 3], forces [n, 13, 3], energies [n] (float64) of distorted Cu13 icosahedra."""
    rng = np.random.default_rng(seed)
    atoms = Icosahedron("Cu", noshells=2)
    base = atoms.positions - atoms.positions.mean(axis=0)
    atoms.calc = EMT()
    pos, forces, energy = [], [], []
    for _ in range(n):
        x = base + rng.uniform(0.02, 0.1) * rng.standard_normal((N_ATOMS, 3))
        atoms.positions = x - x.mean(axis=0)
        pos.append(atoms.positions.copy())
        forces.append(atoms.get_forces())
        energy.append(atoms.get_potential_energy())
    as_t = lambda a: torch.tensor(np.array(a), dtype=torch.float64)
    return as_t(pos), as_t(forces), as_t(energy)


def rotate(Q, v):
    return torch.einsum("sij,snj->sni", Q, v)  # [S, 13, 3]


class CoordinateMLP(torch.nn.Module):
    """E(x) = e0 + MLP(centred, flattened coordinates [S, 39]); not rotation-invariant."""

    def __init__(self, e0, hidden, layers):
        super().__init__()
        self.e0 = float(e0)
        sizes = [3 * N_ATOMS] + [hidden] * layers
        mods = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            mods += [torch.nn.Linear(a, b), torch.nn.SiLU()]
        self.net = torch.nn.Sequential(*mods, torch.nn.Linear(sizes[-1], 1))

    def forward(self, pos):  # pos [S, 13, 3]
        centred = pos - pos.mean(dim=1, keepdim=True)
        return self.e0 + self.net(centred.reshape(pos.shape[0], -1))[:, 0]  # [S]


def mlp_ef(model, pos, create_graph=False):
    pos = pos.detach().requires_grad_(True)
    energy = model(pos)  # [S]
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    return energy, -grad  # [S], [S, 13, 3]


def potential_ef(model, pos, create_graph=False):
    S = pos.shape[0]
    out = model(torch.full((S * N_ATOMS,), 29, device=pos.device), pos.reshape(-1, 3),
                batch=torch.arange(S, device=pos.device).repeat_interleave(N_ATOMS), create_graph=create_graph)
    return out["energy"], out["forces"].reshape(S, N_ATOMS, 3)


def train(kind, data, n, K, seed, args):
    pos, forces, energy = (t[:n].float() for t in data)
    if K > 0:
        Q = rand_orthogonal(K * n, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float32)
        pos = torch.cat([pos, rotate(Q, pos.repeat(K, 1, 1))])
        forces = torch.cat([forces, rotate(Q, forces.repeat(K, 1, 1))])
        energy = energy.repeat(K + 1)
    torch.manual_seed(seed)
    if kind == "mlp":
        model, ef, lr, steps, batch = CoordinateMLP(energy.mean(), args.mlp_hidden, args.mlp_layers), mlp_ef, \
            args.mlp_lr, args.steps, args.batch
    else:
        model = InteratomicPotential([29], cutoff=4.5, irreps_hidden=args.irreps, num_layers=args.layers,
                                     lmax=args.lmax, num_basis=8, radial_hidden=32, avg_num_neighbors=12.0)
        model.fit_scale_shift(torch.full((n * N_ATOMS,), 29), torch.arange(n).repeat_interleave(N_ATOMS),
                              energy[:n], forces[:n].reshape(-1, 3))
        ef, lr, steps, batch = potential_ef, args.pot_lr, args.pot_steps, args.pot_batch
    model = model.to(args.device)
    pos, forces, energy = pos.to(args.device), forces.to(args.device), energy.to(args.device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, pos.shape[0], (batch,), generator=gen).to(args.device)
        e, f = ef(model, pos[idx], create_graph=True)
        loss = ((e - energy[idx]) / N_ATOMS).square().mean() + (f - forces[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return copy.deepcopy(model).cpu().double(), ef


def evaluate(model, ef, test, test_rot):
    _, f_up = ef(model, test[0])
    _, f_rot = ef(model, test_rot[0])
    report = equivariance_report(lambda p: ef(model, p)[1].detach(), test[0][:16], haar_o3,
                                 act_in=lambda Q, p: p @ Q.T, act_out=lambda Q, f: f @ Q.T, n_samples=16, seed=2)
    return {"upright": float((f_up.detach() - test[1]).abs().mean()),
            "rotated": float((f_rot.detach() - test_rot[1]).abs().mean()),
            "equivariance": float(np.mean(report.errors))}


def summary(rows, key):
    v = np.array([r[key] for r in rows])
    return v.mean(), v.std()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", type=int, default=1000, help="training structures available")
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--budgets", type=int, nargs="+", default=[0, 1, 4, 16, 64])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100, 300, 1000],
                   help="training-set sizes of the learning curves (MLP at the largest budget, equivariant at K=0)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000, help="MLP optimisation steps (chapter 18: 300)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--mlp_hidden", type=int, default=256)
    p.add_argument("--mlp_layers", type=int, default=3)
    p.add_argument("--mlp_lr", type=float, default=1e-3)
    p.add_argument("--pot_steps", type=int, default=1000, help="potential optimisation steps (chapter 18: 80)")
    p.add_argument("--pot_batch", type=int, default=16)
    p.add_argument("--pot_lr", type=float, default=5e-3)
    p.add_argument("--irreps", default="32x0e+8x1o+4x2e")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lmax", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="chapter 18's sizes and one seed (overrides the other size flags)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.quick:
        args.pool, args.test, args.budgets, args.sizes, args.seeds = 100, 200, [0, 1, 4, 16], [5, 10, 25, 100], 1
        args.steps, args.batch, args.mlp_hidden, args.mlp_layers, args.mlp_lr = 300, 32, 128, 2, 3e-3
        args.pot_steps, args.pot_lr, args.irreps, args.layers, args.lmax = 80, 1e-2, "32x0e", 1, 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    pool = rattled_clusters(args.pool, seed=0)
    test = rattled_clusters(args.test, seed=1)
    Q = rand_orthogonal(args.test, generator=torch.Generator().manual_seed(1))
    test_rot = (rotate(Q, test[0]), rotate(Q, test[1]))
    print(f"data: {args.pool} + {args.test} EMT structures in {time.perf_counter() - t0:.0f} s; force spread "
          f"{1000 * float(test[1].std()):.0f} meV/A")
    out = {"args": vars(args), "budget": {}, "curve": {}}

    print(f"\naugmentation budget, n = {args.pool}, {args.seeds} seed(s): force MAE (meV/A) and mean equivariance "
          "error (eV/A), mean +- std")
    print(f"{'model':14s} {'upright':>14s} {'rotated':>14s} {'equivariance':>22s}")
    rows_by = {}
    for label, kind, K in [*(("MLP, K = %d" % K, "mlp", K) for K in args.budgets),
                           ("equivariant", "pot", 0), ("equivariant16", "pot", 16)]:
        t = time.perf_counter()
        rows = [evaluate(*train(kind, pool, args.pool, K, s, args), test, test_rot) for s in range(args.seeds)]
        rows_by[label] = rows
        (u, su), (r, sr), (e, se) = (summary(rows, k) for k in ("upright", "rotated", "equivariance"))
        name = "equivariant, K = 16" if label == "equivariant16" else label
        print(f"{name:14s} {1000 * u:7.0f} +- {1000 * su:4.0f} {1000 * r:7.0f} +- {1000 * sr:4.0f} "
              f"{e:11.1e} +- {se:8.1e}   ({time.perf_counter() - t:.0f} s)")
        out["budget"][name] = rows

    Kmax = max(args.budgets)
    print(f"\nlearning curves (rotated test, meV/A): MLP with K = {Kmax}, equivariant with K = 0")
    print(f"{'n':>6s} {'MLP':>16s} {'equivariant':>16s} {'ratio':>7s}")
    for n in args.sizes:
        if n > args.pool:
            continue
        m = [evaluate(*train("mlp", pool, n, Kmax, s, args), test, test_rot)["rotated"] for s in range(args.seeds)]
        q = [evaluate(*train("pot", pool, n, 0, s, args), test, test_rot)["rotated"] for s in range(args.seeds)]
        out["curve"][n] = {"mlp": m, "equivariant": q}
        print(f"{n:6d} {1000 * np.mean(m):9.0f} +- {1000 * np.std(m):4.0f} {1000 * np.mean(q):9.0f} +- "
              f"{1000 * np.std(q):4.0f} {np.mean(m) / np.mean(q):6.1f}x")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
