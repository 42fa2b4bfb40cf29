r"""An ASE calculator for a minequi potential: ``MinequiCalculator``.

ASE (the Atomic Simulation Environment) drives molecular dynamics, geometry optimisation and phonon
calculations through *calculators*: objects that, given an ``ase.Atoms``, return its
``energy`` (eV), ``forces`` (eV/Angstrom, ``[N, 3]``) and ``stress`` (eV/Angstrom^3, the
Voigt 6-vector ``(xx, yy, zz, yz, xz, xy)``, positive when the cell is under tension, the
sign of ``ase.Atoms.get_stress()``).  :class:`MinequiCalculator` wraps any model with the
interface of :class:`~minequi.potential.InteratomicPotential`: it converts the ``Atoms``
(numbers, positions, cell with rows = lattice vectors, pbc) to tensors, runs the model in
eval mode in the requested dtype on the requested device, and converts the results back.

The stress is computed only for fully periodic cells (``atoms.pbc.all()``); asking for it
otherwise raises ``PropertyNotImplementedError``, as ASE's own calculators do.
``free_energy`` equals ``energy`` (no electronic temperature).

This module imports ASE; ``minequi/__init__.py`` never imports it, so the library itself needs
only torch and numpy.

>>> import ase, torch
>>> from minequi.potential import InteratomicPotential
>>> _ = torch.manual_seed(0)
>>> model = InteratomicPotential([1, 8], cutoff=3.0, irreps_hidden="8x0e+4x1o", num_layers=2)
>>> atoms = ase.Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
>>> atoms.calc = MinequiCalculator(model)
>>> atoms.get_forces().shape, abs(atoms.get_forces().sum(0)).max() < 1e-12
((3, 3), True)
"""
from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

__all__ = ["MinequiCalculator"]


class MinequiCalculator(Calculator):
    """ASE calculator (``energy``, ``free_energy``, ``forces``, ``stress``) for a minequi potential.

    Args:
        model: an :class:`~minequi.potential.InteratomicPotential` (or any module with its
            ``forward(numbers, pos, cell, pbc, batch, compute_forces, compute_stress)``).
            A copy in ``dtype`` on ``device`` is kept, in eval mode; the original is untouched.
        dtype: precision of the evaluation (float64 by default: molecular dynamics and finite
            differences want it).
        device: where the model runs.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.float64, device="cpu", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        import copy

        self.dtype, self.device = dtype, torch.device(device)
        self.model = copy.deepcopy(model).to(dtype=dtype, device=self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pbc = np.asarray(atoms.pbc, dtype=bool)
        want_stress = "stress" in properties
        if want_stress and not pbc.all():
            raise PropertyNotImplementedError(
                f"stress needs a fully periodic cell, got pbc={pbc.tolist()}")
        numbers = torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device)  # [N]
        pos = torch.as_tensor(atoms.positions, dtype=self.dtype, device=self.device)  # [N, 3]
        cell = pbc_t = None
        if pbc.any():
            cell = torch.as_tensor(np.asarray(atoms.cell), dtype=self.dtype, device=self.device)[None]  # [1, 3, 3]
            pbc_t = torch.as_tensor(pbc, device=self.device)[None]  # [1, 3]
        out = self.model(numbers, pos, cell, pbc_t, None, compute_forces=True, compute_stress=want_stress,
                         create_graph=False)
        energy = float(out["energy"].detach().sum())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out["forces"].detach().cpu().to(torch.float64).numpy()  # [N, 3]
        if want_stress:
            s = out["stress"].detach().cpu().to(torch.float64).numpy()[0]  # [3, 3]
            self.results["stress"] = s.flat[[0, 4, 8, 5, 2, 1]].copy()  # Voigt: xx yy zz yz xz xy
