r"""The gated nonlinearity on irreps features: ``Gate``.

A pointwise nonlinearity such as ReLU applied to the components of an ``l > 0``
feature breaks equivariance (the components mix under rotations).  The gate of
Weiler et al. :cite:`weiler20183d` only ever applies nonlinearities to
*scalars*, which rotations leave alone, and multiplies each non-scalar irrep by
a scalar:

.. math::
   \text{Gate}(s, g, v) = \big(\sigma(s),\; \phi(g_1)\, v_1,\; \dots,\; \phi(g_n)\, v_n\big),

where ``s`` are scalars (``irreps_scalars``) passed through ``act_scalars``,
``g`` are ``n`` gate scalars (``irreps_gates``) passed through ``act_gates``
(e.g. a sigmoid) and ``v_1, ..., v_n`` are the ``n`` irrep copies of
``irreps_gated``.  The input is the concatenation ``scalars + gates + gated``
and the output is ``scalars + gated``.  Since :math:`\phi(g_k)` is invariant,
:math:`\phi(g_k)\, D v_k = D\, \phi(g_k) v_k`.

Parity.  Under the inversion an odd scalar ``0o`` flips sign, so
:math:`\sigma(-s)` must be :math:`\pm\sigma(s)`: an *odd* activation keeps the
output ``0o``, an *even* one makes it ``0e`` (as in e3nn); any other
activation on an odd scalar raises ``ValueError``.  The same rule applies to
odd gates, and the gated irreps' parity is multiplied by the parity of
:math:`\phi(g_k)`.  Whether an activation is odd or even is decided
numerically on a grid of points.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .irreps import Irreps

__all__ = ["Gate"]


def _activation_parity(act: Callable) -> int:
    """+1 if ``act`` is even, -1 if odd, 0 if neither (checked on a grid in float64)."""
    x = torch.linspace(0.0, 10.0, 257, dtype=torch.float64)
    a, b = act(x), act(-x)
    if torch.allclose(a, b, atol=1e-9, rtol=1e-9):
        return 1
    if torch.allclose(a, -b, atol=1e-9, rtol=1e-9):
        return -1
    return 0


def _acts(acts, irreps, name):
    if isinstance(acts, str):
        raise TypeError(f"{name} must be a callable (e.g. torch.relu) or a list of callables, one per entry "
                        f"of {irreps}; got the string {acts!r} (activations are not looked up by name)")
    if callable(acts):
        return [acts] * len(irreps)
    acts = list(acts)
    if len(acts) != len(irreps):
        raise ValueError(f"{name} must be one callable or one per entry of {irreps} "
                         f"({len(irreps)} entries), got {len(acts)}")
    for a in acts:
        if not callable(a):
            raise TypeError(f"{name} must contain callables, got {a!r} of type {type(a).__name__}")
    return acts


def _scalars_out(irreps, acts, name):
    """Check that ``irreps`` are scalars and return (output irreps, parity factor per entry)."""
    out, factors = [], []
    for (mul, ir), act in zip(irreps, acts):
        if ir.l != 0:
            raise ValueError(f"{name} must contain scalars (l = 0) only, got {irreps}")
        if ir.p == 1:
            out.append((mul, "0e"))
            factors.append(1)
            continue
        q = _activation_parity(act)
        if q == 0:
            raise ValueError(
                f"{name}: the activation {getattr(act, '__name__', act)!r} applied to odd scalars 0o "
                f"must be odd or even, it is neither (an odd activation keeps 0o, an even one gives 0e)")
        out.append((mul, "0o" if q == -1 else "0e"))
        factors.append(-1 if q == -1 else 1)
    return Irreps(out), factors


class Gate(nn.Module):
    r"""Gated nonlinearity: ``scalars + gates + gated -> act(scalars) + act_gates(gates) * gated``.

    Args:
        irreps_scalars: scalars passed through ``act_scalars`` (may be empty, ``""``).
        act_scalars: one callable, or one per entry of ``irreps_scalars``.
        irreps_gates: scalars, as many copies as ``irreps_gated`` has irreps
            (``irreps_gated.num_irreps``); gate ``k`` multiplies the ``k``-th gated copy.
        act_gates: one callable, or one per entry of ``irreps_gates``.
        irreps_gated: the irreps that are gated.

    Shapes: ``x [..., irreps_in.dim] -> [..., irreps_out.dim]`` with
    ``irreps_in = irreps_scalars + irreps_gates + irreps_gated`` and
    ``irreps_out = irreps_scalars + irreps_gated`` (parities as in the module docstring).

    >>> gate = Gate("4x0e", torch.relu, "2x0e", torch.sigmoid, "1x1o+1x2e")
    >>> gate.irreps_in, gate.irreps_out
    (4x0e+2x0e+1x1o+1x2e, 4x0e+1x1o+1x2e)
    >>> gate(torch.randn(3, 14)).shape
    torch.Size([3, 12])
    >>> Gate("", torch.relu, "1x1o", torch.sigmoid, "1x1o")
    Traceback (most recent call last):
    ...
    ValueError: irreps_gates must contain scalars (l = 0) only, got 1x1o
    """

    def __init__(self, irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated):
        super().__init__()
        self.irreps_scalars = Irreps(irreps_scalars)
        self.irreps_gates = Irreps(irreps_gates)
        self.irreps_gated = Irreps(irreps_gated)
        self.act_scalars = _acts(act_scalars, self.irreps_scalars, "act_scalars")
        self.act_gates = _acts(act_gates, self.irreps_gates, "act_gates")
        scalars_out, _ = _scalars_out(self.irreps_scalars, self.act_scalars, "irreps_scalars")
        _, gate_factors = _scalars_out(self.irreps_gates, self.act_gates, "irreps_gates")
        if self.irreps_gates.num_irreps != self.irreps_gated.num_irreps:
            raise ValueError(
                f"irreps_gates has {self.irreps_gates.num_irreps} scalars ({self.irreps_gates}) but "
                f"irreps_gated has {self.irreps_gated.num_irreps} irreps ({self.irreps_gated}): "
                f"one gate per gated irrep copy is needed")
        # parity of each gate copy after its activation, then of each gated output entry
        per_copy = [f for (mul, _), f in zip(self.irreps_gates, gate_factors) for _ in range(mul)]
        gated_out, k = [], 0
        for mul, ir in self.irreps_gated:
            for f in per_copy[k:k + mul]:
                gated_out.append((1, (ir.l, ir.p * f)))
            k += mul
        self.irreps_in = self.irreps_scalars + self.irreps_gates + self.irreps_gated
        self.irreps_out = Irreps(list(scalars_out) + list(Irreps(gated_out).simplify()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.irreps_in.check_features(x, "x", "irreps_in (scalars + gates + gated)")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        ns, ng = self.irreps_scalars.dim, self.irreps_gates.dim
        s, g, v = x[..., :ns], x[..., ns:ns + ng], x[..., ns + ng:]
        outs = []
        for sl, act in zip(self.irreps_scalars.slices(), self.act_scalars):
            outs.append(act(s[..., sl]))
        gates = [act(g[..., sl]) for sl, act in zip(self.irreps_gates.slices(), self.act_gates)]
        if gates:
            gates = torch.cat(gates, dim=-1)  # [..., n]
            k = 0
            for (mul, ir), sl in zip(self.irreps_gated, self.irreps_gated.slices()):
                vi = v[..., sl].reshape(*v.shape[:-1], mul, ir.dim)  # [..., mul, 2l+1]
                outs.append((vi * gates[..., k:k + mul, None]).reshape(*v.shape[:-1], mul * ir.dim))
                k += mul
        if not outs:
            return x[..., :0]
        return torch.cat(outs, dim=-1)
