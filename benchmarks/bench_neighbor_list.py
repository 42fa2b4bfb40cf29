"""Benchmark: minequi's periodic neighbor_list vs ASE, vesin and matscipy, side by side in one run.

Systems: fcc copper as for EMT (``ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)``,
n = 3, 6, 10: 108, 864, 4000 atoms), rattled by 0.05 A, cutoff 5 A, full list (both directions)
with integer shifts ("ijS").  Before timing, every library's list is checked to be the same set of
(i, j, S) as minequi's (so the rows compare equal work).  Times are the median of ``--repeats``
interleaved repeats (benchmarks/timing.py); the ratio column is minequi's time over the peer's
(< 1: minequi faster).  The last lines fit time ~ N^alpha between the smallest and largest
system for each library (alpha = 1: linear growth).  A last row times a training-style batch
(``--batch`` rattled 32-atom cells): one ``batched_neighbor_list`` call against the peers called
once per structure.  Last, free clusters (Cu13, Cu55, Cu309 icosahedra, no cell), the case of
chapter 17's molecular dynamics.

minequi receives float64 tensors that already exist (on ``--device``); the peers receive the
numpy arrays / ase.Atoms they take.  vesin runs with its default thread count.

Usage: python benchmarks/bench_neighbor_list.py [--repeats 5] [--device cpu|cuda] [--sizes 3 6 10] [--batch 32]
"""
import argparse
import math

import numpy as np
import torch

from minequi.neighbor_list import batched_neighbor_list, neighbor_list
from timing import median_times

try:  # benchmark-only dependencies
    from ase.build import bulk
    from ase.neighborlist import neighbor_list as ase_neighbor_list
except ImportError:  # pragma: no cover
    raise SystemExit("this benchmark needs ase")
try:
    import vesin
except ImportError:  # pragma: no cover
    vesin = None
try:
    from matscipy.neighbours import neighbour_list as matscipy_neighbour_list
except ImportError:  # pragma: no cover
    matscipy_neighbour_list = None

CUTOFF = 5.0


def copper(n):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)
    atoms.rattle(0.05, seed=0)
    return atoms


def as_set(i, j, S):
    """Set of (i, j, S) triples from any library (ASE's order: vector = pos[j] - pos[i] + S @ cell)."""
    S = np.asarray(S).round().astype(np.int64)
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, S.tolist())))


def batch_rows(args, names, device, sync):
    """A training-style batch: G small periodic cells in one batched_neighbor_list call; the peers loop."""
    G = args.batch
    if G <= 0:
        return
    structures = []
    for g in range(G):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # 32 atoms, cell 7.22 A < 2 x cutoff
        atoms.rattle(0.1, seed=g)
        structures.append(atoms)
    pos = torch.tensor(np.concatenate([a.positions for a in structures]), dtype=torch.float64, device=device)
    cell = torch.tensor(np.stack([a.cell[:] for a in structures]), dtype=torch.float64, device=device)
    batch = torch.arange(G, device=device).repeat_interleave(len(structures[0]))

    def run_minequi():
        out = batched_neighbor_list(pos, CUTOFF, cell, None, batch)
        sync()
        return out

    fns = {"minequi": run_minequi,
           "ase": lambda: [ase_neighbor_list("ijS", a, CUTOFF) for a in structures]}
    if "vesin" in names:
        nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
        fns["vesin"] = lambda: [nl.compute(a.positions, a.cell[:], True, quantities="ijS") for a in structures]
    if "matscipy" in names:
        fns["matscipy"] = lambda: [matscipy_neighbour_list("ijS", a, CUTOFF) for a in structures]
    ei, S = run_minequi()
    n_peer = sum(len(out[0]) for out in fns["ase"]())
    if n_peer != ei.shape[1]:
        raise SystemExit(f"batched pair count {ei.shape[1]} != ASE's {n_peer}")
    times = median_times([fns[name] for name in names], repeats=args.repeats)
    print(f"batch of {G} x 32 atoms (one batched_neighbor_list call; the peers loop over the structures):")
    print(f"{G * 32:>6} {ei.shape[1]:>8} " + " ".join(f"{1e3 * t:>12.2f}" for t in times) + "   " +
          " ".join(f"{times[0] / t:>12.2f}" for t in times[1:]))


def cluster_rows(args, names, device, sync):
    """Free clusters (no cell, as in chapter 17's molecular dynamics): Cu13 and Cu55 icosahedra, rattled."""
    from ase.cluster import Icosahedron

    print("free clusters (no periodic axis; minequi tests all pairs at once up to 256 atoms):")
    for shells in (2, 3, 5):
        atoms = Icosahedron("Cu", noshells=shells)
        atoms.rattle(0.05, seed=0)
        pos_np = atoms.positions
        pos = torch.tensor(pos_np, dtype=torch.float64, device=device)

        def run_minequi():
            out = neighbor_list(pos, CUTOFF)
            sync()
            return out

        fns = {"minequi": run_minequi, "ase": lambda: ase_neighbor_list("ijS", atoms, CUTOFF)}
        if "vesin" in names:
            nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
            fns["vesin"] = lambda: nl.compute(pos_np, np.zeros((3, 3)), False, quantities="ijS")
        if "matscipy" in names:  # it needs a cell: a box with vacuum, pbc False (same pairs)
            boxed = atoms.copy()
            boxed.center(vacuum=CUTOFF)
            fns["matscipy"] = lambda: matscipy_neighbour_list("ijS", boxed, CUTOFF)
        ei, S = run_minequi()
        ref = as_set(ei[1].cpu().numpy(), ei[0].cpu().numpy(), S.cpu().numpy())
        for name in names[1:]:
            if as_set(*fns[name]()) != ref:
                raise SystemExit(f"{name} disagrees with minequi on the {len(atoms)}-atom cluster")
        times = median_times([fns[name] for name in names], repeats=max(args.repeats, 20))
        print(f"{len(atoms):>6} {len(ref):>8} " + " ".join(f"{1e3 * t:>12.3f}" for t in times) + "   " +
              " ".join(f"{times[0] / t:>12.2f}" for t in times[1:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 6, 10])
    ap.add_argument("--batch", type=int, default=32, help="structures in the batch row (0: skip)")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; cutoff {CUTOFF} A")

    names = ["minequi", "ase"] + (["vesin"] if vesin else []) + (["matscipy"] if matscipy_neighbour_list else [])
    results = {name: [] for name in names}
    natoms = []
    header = f"{'atoms':>6} {'pairs':>8} " + " ".join(f"{n + ' ms':>12}" for n in names) + "   " + \
        " ".join(f"{'mq/' + n:>12}" for n in names[1:])
    print(header)
    for n in args.sizes:
        atoms = copper(n)
        pos_np, cell_np = atoms.positions, atoms.cell[:]
        pos = torch.tensor(pos_np, dtype=torch.float64, device=device)
        cell = torch.tensor(cell_np, dtype=torch.float64, device=device)

        def run_minequi():
            out = neighbor_list(pos, CUTOFF, cell, pbc=True)
            sync()
            return out

        fns = {
            "minequi": run_minequi,
            "ase": lambda: ase_neighbor_list("ijS", atoms, CUTOFF),
        }
        if vesin:
            nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
            fns["vesin"] = lambda: nl.compute(pos_np, cell_np, True, quantities="ijS")
        if matscipy_neighbour_list:
            fns["matscipy"] = lambda: matscipy_neighbour_list("ijS", atoms, CUTOFF)

        # correctness first: every library returns the same set of (i, j, S)
        ei, S = run_minequi()
        ref = as_set(ei[1].cpu().numpy(), ei[0].cpu().numpy(), S.cpu().numpy())
        for name in names[1:]:
            got = as_set(*fns[name]())
            if got != ref:
                raise SystemExit(f"{name} disagrees with minequi at N = {len(atoms)}: "
                                 f"{len(got ^ ref)} differing pairs")

        times = median_times([fns[name] for name in names], repeats=args.repeats)
        for name, t in zip(names, times):
            results[name].append(t)
        natoms.append(len(atoms))
        print(f"{len(atoms):>6} {len(ref):>8} " + " ".join(f"{1e3 * t:>12.2f}" for t in times) + "   " +
              " ".join(f"{times[0] / t:>12.2f}" for t in times[1:]))

    batch_rows(args, names, device, sync)
    cluster_rows(args, names, device, sync)

    if len(natoms) >= 2:
        print("growth with N: time ~ N^alpha between the smallest and largest system; "
              "microseconds per atom at the largest")
        for name in names:
            t = results[name]
            alpha = math.log(t[-1] / t[0]) / math.log(natoms[-1] / natoms[0])
            print(f"  {name:>9}: alpha = {alpha:.2f}, {1e6 * t[-1] / natoms[-1]:.2f} us/atom")


if __name__ == "__main__":
    main()
