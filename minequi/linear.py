r"""Equivariant linear maps between irreps features: ``Linear``.

By Schur's lemma the only linear maps between two irreducible representations
of O(3) that commute with the group action are zero (different irreps) and
multiples of the identity (the same irrep, in a real basis where the irrep is
absolutely irreducible, as all irreps of O(3) are).  So an equivariant linear
map ``irreps_in -> irreps_out`` can only *mix the copies* of each irrep
``(l, p)``: for every entry ``mul_in x (l, p)`` of the input and every entry
``mul_out x (l, p)`` of the output with the same irrep there is a weight matrix
``W [mul_in, mul_out]`` and

.. math:: \text{out}_{w m} = \frac{1}{\sqrt{\text{fan\_in}}} \sum_{u} W_{u w}\, x_{u m},

the same for every component ``m``.  ``fan_in`` is the number of input copies
of ``(l, p)`` (summed over all input entries with that irrep), so that with
weights ~ N(0, 1) and unit-variance inputs the outputs have unit variance.

Output entries whose irrep does not occur in the input are **zero** (there is
no equivariant map to them), as in e3nn; a ``Linear`` with no path at all
raises ``ValueError``.  With ``bias=True`` each ``0e`` output copy gets a
learnable bias (initialised to 0): adding a constant is equivariant only on
invariant (even scalar) components.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .irreps import Irreps

__all__ = ["Linear"]


class Linear(nn.Module):
    r"""Equivariant linear map ``irreps_in -> irreps_out`` (mixes copies of equal irreps).

    Args:
        irreps_in, irreps_out: ``Irreps`` or strings.
        bias: add a learnable bias to the ``0e`` outputs.

    Shapes: ``x [..., irreps_in.dim] -> [..., irreps_out.dim]``.
    ``weight`` is the concatenation of one ``[mul_in, mul_out]`` block per path
    ``(i_in, i_out)`` (ordered by ``i_out``, then ``i_in``); ``paths`` lists them.

    >>> lin = Linear("4x0e+2x1o", "3x0e+1x1o+1x2e", bias=True)
    >>> lin.paths, lin.weight.shape, lin.bias.shape
    ([(0, 0), (1, 1)], torch.Size([14]), torch.Size([3]))
    >>> lin(torch.randn(10, 10)).shape
    torch.Size([10, 11])
    >>> Linear("1o", "1e")
    Traceback (most recent call last):
    ...
    ValueError: Linear: no irrep of irreps_in=1x1o occurs in irreps_out=1x1e ...
    """

    def __init__(self, irreps_in, irreps_out, bias: bool = False):
        super().__init__()
        self.irreps_in = Irreps(irreps_in)
        self.irreps_out = Irreps(irreps_out)
        ins, outs = list(self.irreps_in), list(self.irreps_out)
        self.paths = [(i, o) for o, (mo, iro) in enumerate(outs) for i, (mi, iri) in enumerate(ins)
                      if iri == iro and mi * mo > 0]
        if not self.paths:
            raise ValueError(
                f"Linear: no irrep of irreps_in={self.irreps_in} occurs in irreps_out={self.irreps_out} "
                f"(an equivariant linear map only connects equal irreps)")
        self._in_slices = self.irreps_in.slices()
        self._out_slices = self.irreps_out.slices()
        fan_in = {}
        for i, o in self.paths:
            fan_in[o] = fan_in.get(o, 0) + ins[i][0]
        self._blocks = []  # (i, o, weight start, weight stop, alpha)
        start = 0
        for i, o in self.paths:
            n = ins[i][0] * outs[o][0]
            self._blocks.append((i, o, start, start + n, 1.0 / math.sqrt(fan_in[o])))
            start += n
        self.weight_numel = start
        self.weight = nn.Parameter(torch.randn(start))
        scalar_outs = [o for o, (mul, ir) in enumerate(outs) if ir.l == 0 and ir.p == 1]
        self._bias_slices = []
        nb = 0
        for o in scalar_outs:
            self._bias_slices.append((o, nb, nb + outs[o][0]))
            nb += outs[o][0]
        if bias and nb > 0:
            self.bias = nn.Parameter(torch.zeros(nb))
        else:
            self.register_parameter("bias", None)

    def extra_repr(self):
        return f"{self.irreps_in} -> {self.irreps_out}, weight_numel={self.weight_numel}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.irreps_in.check_features(x, "x", "irreps_in")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if x.dtype != self.weight.dtype or x.device != self.weight.device:
            raise TypeError(
                f"Linear: x is {x.dtype} on {x.device} but the parameters are {self.weight.dtype} on "
                f"{self.weight.device}; a module's parameters must match its input (use .to(...) on one)")
        batch = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])  # [B, dim_in]
        B = x.shape[0]
        weight = self.weight
        outs = [None] * len(self.irreps_out)
        for i, o, w0, w1, alpha in self._blocks:
            mul_in, ir = self.irreps_in[i]
            mul_out = self.irreps_out[o][0]
            W = weight[w0:w1].reshape(mul_in, mul_out) * alpha  # [U, W]
            xi = x[:, self._in_slices[i]].reshape(B, mul_in, ir.dim)  # [B, U, d]
            y = torch.einsum("bud,uw->bwd", xi, W)  # [B, W, d]
            outs[o] = y if outs[o] is None else outs[o] + y
        if self.bias is not None:
            for o, b0, b1 in self._bias_slices:
                b = self.bias[b0:b1][None, :, None]  # [1, W, 1]
                outs[o] = b.expand(B, -1, -1) if outs[o] is None else outs[o] + b
        out = [x.new_zeros(B, mul * ir.dim) if y is None else y.reshape(B, mul * ir.dim)
               for y, (mul, ir) in zip(outs, self.irreps_out)]
        return torch.cat(out, dim=-1).reshape(*batch, self.irreps_out.dim)
