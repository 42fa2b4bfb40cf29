"""Interatomic potential, energy + forces (forward + backward): minequi vs the same architecture in e3nn.

Rattled fcc copper (``ase.build.bulk('Cu', 'fcc', a=3.61, cubic=True)`` repeated 3x3x3, 6x6x6
and 10x10x10: 108, 864 and 4,000 atoms, each atom displaced by N(0, 0.05 A)), periodic, one
structure per call, float32.  The model: ``InteratomicPotential(species=[29], cutoff=4.0,
irreps_hidden="32x0e+16x1o+8x2e", num_layers=3, lmax=2, num_basis=8, radial_hidden=16)``, a
NequIP-style stack (one-hot embedding -> Linear; 3 x [PointConv "uvu" -> Linear -> Gate (+
residual)]; Linear readout; per-atom energies summed).

* minequi: :class:`minequi.potential.InteratomicPotential`.
* e3nn 0.6: the same network built from e3nn parts, as NequIP builds it: ``o3.Linear`` (embedding,
  self-interactions with biases, readout), ``o3.spherical_harmonics``, per layer an
  ``nn.FullyConnectedNet`` radial MLP feeding ``o3.TensorProduct(..., "uvu" instructions,
  shared_weights=False)`` on the gathered source features, a scatter-sum (``index_add``), and
  ``nn.Gate``; the same Bessel basis and polynomial envelope modules (minequi's) on the edge
  lengths.  Weights are copied from the minequi model (per-path signs of the Clebsch-Gordan
  conventions folded into the radial MLP's last layer, the activations' normalisation constants
  set to minequi's quadrature values), and the script first checks that both give the same
  energies and forces (float64).

Both take the SAME edges (``minequi.neighbor_list.batched_neighbor_list``, built once outside the
timed region) and compute forces as ``-dE/dpos`` by one backward pass.  A third column times the
full ``InteratomicPotential.__call__`` (neighbour list + energy + forces).  Times per atom show how
the cost grows with size (it should be constant: linear scaling).

Run:  .venv/bin/python benchmarks/bench_potential.py [--threads 1] [--repeats 5] [--sizes 3 6 10]
"""
import argparse
import math

import torch

from minequi.neighbor_list import batched_neighbor_list
from minequi.potential import InteratomicPotential
from timing import median_times  # benchmarks/timing.py

HIDDEN, CUTOFF, LAYERS = "32x0e+16x1o+8x2e", 4.0, 3


class E3nnPotential(torch.nn.Module):
    """The architecture of ``ours`` (an InteratomicPotential) from e3nn 0.6 parts, weights copied."""

    def __init__(self, ours):
        super().__init__()
        from e3nn import nn as enn
        from e3nn import o3

        from minequi.clebsch_gordan import clebsch_gordan

        self.o3 = o3
        self.ours = ours  # for the Bessel basis / envelope modules and the scale and shift buffers
        self.irreps_sh = o3.Irreps(str(ours.irreps_sh))
        self.embedding = self._linear(ours.embedding)
        self.fcs, self.tps, self.linears, self.gates = (torch.nn.ModuleList() for _ in range(4))
        for conv, lin, gate in zip(ours.convs, ours.linears, ours.gates):
            ins = [(p.i_in1, p.i_in2, p.i_out, "uvu", True) for p in conv.tp.paths]
            tp = o3.TensorProduct(str(conv.irreps_in), str(conv.irreps_sh), str(conv.irreps_out), ins,
                                  shared_weights=False, internal_weights=False)
            sizes = [w.shape[0] for w in conv.radial.weights] + [conv.radial.weights[-1].shape[1]]
            fc = enn.FullyConnectedNet(sizes, torch.nn.functional.silu)
            signs = []  # clebsch_gordan = s * sqrt(2 l3 + 1) * o3.wigner_3j, one sign per path
            for p in conv.tp.paths:
                W = o3.wigner_3j(p.l1, p.l2, p.l3, dtype=torch.float64)
                s = 1.0 if (clebsch_gordan(p.l1, p.l2, p.l3) * W).sum() > 0 else -1.0
                signs += [s] * (p.weight_stop - p.weight_start)
            with torch.no_grad():
                for k, W in enumerate(conv.radial.weights):
                    last = k == len(conv.radial.weights) - 1
                    getattr(fc, f"layer{k}").weight.copy_(W * torch.tensor(signs, dtype=W.dtype) if last else W)
            self.fcs.append(fc)
            self.tps.append(tp)
            self.linears.append(self._linear(lin))
            self.gates.append(enn.Gate(str(gate.irreps_scalars), [torch.nn.functional.silu] * len(gate.irreps_scalars),
                                       str(gate.irreps_gates), [torch.sigmoid] * len(gate.irreps_gates),
                                       str(gate.irreps_gated)))
        self.readout = self._linear(ours.readout)
        # e3nn estimates the activations' second-moment constants by Monte Carlo, minequi by
        # Gauss-Hermite quadrature (they differ by ~2e-3): use minequi's, so that the outputs agree
        from minequi.point_conv import normalize2mom

        for m in self.modules():
            if type(m).__name__ == "normalize2mom":
                m.cst, m._is_id = normalize2mom(m.f).keywords["c"], False

    def _linear(self, lin):
        """An o3.Linear with the weights (and biases) of a minequi Linear."""
        e = self.o3.Linear(str(lin.irreps_in), str(lin.irreps_out), biases=lin.bias is not None)
        blocks = {(i, o): (w0, w1) for i, o, w0, w1, _ in lin._blocks}
        with torch.no_grad():
            e.weight.copy_(torch.cat([lin.weight[slice(*blocks[ins.i_in, ins.i_out])] for ins in e.instructions
                                      if ins.i_in >= 0]))
            if lin.bias is not None:
                e.bias.copy_(lin.bias)
        return e

    def node_energies(self, species_index, edge_index, edge_vec):
        ours = self.ours
        N = species_index.shape[0]
        src, dst = edge_index[0], edge_index[1]
        x = self.embedding(torch.nn.functional.one_hot(species_index, len(ours.species)).to(edge_vec.dtype))
        r = edge_vec.norm(dim=1)  # [E]
        sh = self.o3.spherical_harmonics(self.irreps_sh, edge_vec, normalize=True, normalization="component")
        conv0 = ours.convs[0]
        emb = conv0.basis(r) * (conv0.envelope(r) * conv0.basis_scale)[:, None]  # [E, num_basis]
        for fc, tp, lin, gate, residual in zip(self.fcs, self.tps, self.linears, self.gates, ours.residual):
            msg = tp(x[src], sh, fc(emb))  # [E, conv_out]
            y = torch.zeros(N, msg.shape[1], dtype=msg.dtype, device=msg.device).index_add_(0, dst, msg)
            y = gate(lin(y / math.sqrt(ours.avg_num_neighbors)))
            x = x[:, :residual] + y if residual else y
        return ours.scale * self.readout(x)[:, 0] + ours.atomic_energies[species_index]


def copper(reps, seed=0):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((reps, reps, reps))
    atoms.rattle(0.05, seed=seed)
    return atoms


def energy_and_forces(node_energies, species_index, edge_index, shifts, pos, cell):
    """E = sum of node energies, F = -dE/dpos (one backward)."""
    p = pos.detach().requires_grad_(True)
    edge_vec = p[edge_index[0]] - p[edge_index[1]] + shifts @ cell  # [E, 3]
    energy = node_energies(species_index, edge_index, edge_vec).sum()
    (grad,) = torch.autograd.grad(energy, p)
    return energy.detach(), -grad


def problem(reps, dtype):
    atoms = copper(reps)
    pos = torch.tensor(atoms.positions, dtype=dtype)
    cell = torch.tensor(atoms.cell.array, dtype=dtype)
    numbers = torch.tensor(atoms.numbers)
    batch = torch.zeros(len(atoms), dtype=torch.long)
    edge_index, shifts = batched_neighbor_list(pos, CUTOFF, cell[None], torch.ones(1, 3, dtype=torch.bool), batch)
    return numbers, pos, cell, edge_index, shifts.to(dtype)


def build(dtype):
    torch.manual_seed(0)
    ours = InteratomicPotential([29], cutoff=CUTOFF, irreps_hidden=HIDDEN, num_layers=LAYERS, lmax=2, num_basis=8,
                                radial_hidden=16, avg_num_neighbors=18.0).to(dtype).eval()
    with torch.no_grad():  # nonzero biases, so that the check compares every term
        for lin in ours.linears:
            lin.bias.normal_()
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # e3nn builds its buffers (Wigner 3j) in the default dtype
    theirs = E3nnPotential(ours).to(dtype)
    torch.set_default_dtype(default)
    return ours, theirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 6, 10], help="repetitions of the 4-atom cube")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # correctness first (float64, 108 atoms): same energy and forces
    ours64, theirs64 = build(torch.float64)
    numbers, pos, cell, edge_index, shifts = problem(3, torch.float64)
    index = ours64.species_index(numbers)
    e1, f1 = energy_and_forces(ours64.node_energies, index, edge_index, shifts, pos, cell)
    e2, f2 = energy_and_forces(theirs64.node_energies, index, edge_index, shifts, pos, cell)
    full = ours64(numbers, pos, cell)
    print(f"check (float64, 108 atoms): |E_minequi - E_e3nn| = {abs(float(e1 - e2)):.1e} (|E| = {abs(float(e1)):.1f}), "
          f"max |F_minequi - F_e3nn| = {float((f1 - f2).abs().max()):.1e} (max |F| = {float(f1.abs().max()):.2f}); "
          f"InteratomicPotential.__call__ vs the same edges: {float((full['forces'] - f1).abs().max()):.1e}")
    assert abs(float(e1 - e2)) < 1e-8 * max(1.0, abs(float(e1))) and float((f1 - f2).abs().max()) < 1e-8

    ours, theirs = build(torch.float32)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, float32, median of {args.repeats} "
          f"interleaved repeats; {HIDDEN}, {LAYERS} layers, lmax 2, cutoff {CUTOFF} A; energy + forces")
    header = (f"{'atoms':>6}{'edges':>9}{'e3nn [ms]':>11}{'minequi [ms]':>14}{'e3nn/minequi':>14}"
              f"{'full call [ms]':>16}{'e3nn us/atom':>14}{'minequi us/atom':>17}")
    print(header)
    print("-" * len(header))
    for reps in args.sizes:
        numbers, pos, cell, edge_index, shifts = problem(reps, torch.float32)
        index = ours.species_index(numbers)
        N = pos.shape[0]
        t_e3nn, t_ours, t_full = median_times([
            lambda: energy_and_forces(theirs.node_energies, index, edge_index, shifts, pos, cell),
            lambda: energy_and_forces(ours.node_energies, index, edge_index, shifts, pos, cell),
            lambda: ours(numbers, pos, cell),
        ], args.repeats, warmup=1)
        print(f"{N:>6}{edge_index.shape[1]:>9}{1e3 * t_e3nn:>11.1f}{1e3 * t_ours:>14.1f}{t_e3nn / t_ours:>14.2f}"
              f"{1e3 * t_full:>16.1f}{1e6 * t_e3nn / N:>14.1f}{1e6 * t_ours / N:>17.1f}", flush=True)


if __name__ == "__main__":
    main()
