r"""Invariant Point Attention (IPA): AlphaFold2's attention over residues with frames.

Jumper et al. (2021), supplementary Algorithm 22.  Every residue ``i`` has a single
representation :math:`s_i`, pair features :math:`z_{ij}` and a frame
:math:`T_i = (R_i, t_i)` (:class:`~minequi.rigid.Rigid`, local -> global).  Per head
``h`` (``n_heads``) the algorithm computes

.. math::
    q_i^h, k_i^h, v_i^h &= \text{Linear}(s_i)                                   && \text{(line 1)} \\
    \vec q_i^{hp}, \vec k_i^{hp} &= \text{Linear}(s_i), \ p < N_\text{qk}  && \text{(line 2)} \\
    \vec v_i^{hp} &= \text{Linear}(s_i), \ p < N_\text{v}                   && \text{(line 3)} \\
    w_C = \sqrt{\tfrac{2}{9 N_\text{qk}}}, \quad w_L &= \sqrt{\tfrac13}             && \text{(lines 4-5)} \\
    a_{ij}^h = \text{softmax}_j\Big(w_L\big(\tfrac{1}{\sqrt c} q_i^{h\top} k_j^h + b_{ij}^h
        &- \tfrac{\gamma^h w_C}{2} \textstyle\sum_p \|T_i \circ \vec q_i^{hp} - T_j \circ \vec k_j^{hp}\|^2\big)\Big)
        && \text{(lines 6-7)} \\
    \tilde o_i^h = \textstyle\sum_j a_{ij}^h z_{ij}, \quad
        o_i^h &= \textstyle\sum_j a_{ij}^h v_j^h                                 && \text{(lines 8-9)} \\
    \vec o_i^{hp} &= T_i^{-1} \circ \textstyle\sum_j a_{ij}^h\, T_j \circ \vec v_j^{hp}   && \text{(line 10)} \\
    \tilde s_i &= \text{Linear}\big(\text{concat}_{h,p}(o_i^h, \vec o_i^{hp}, \|\vec o_i^{hp}\|, \tilde o_i^h)\big)
        && \text{(line 11)}

with the pair bias :math:`b_{ij}^h = \text{Linear}(z_{ij})` (line 6) and
:math:`\gamma^h = \text{softplus}(\text{head\_weights}^h)`, initialised to 1.

**Why it is invariant.**  Replace every frame by :math:`T_\text{g} \circ T_i` for one
global rigid motion :math:`T_\text{g} = (Q, u)`.  Points produced in the local frames
(lines 2-3) do not see :math:`T_\text{g}`; in global coordinates they all move by the
same :math:`T_\text{g}`, and a rigid motion preserves distances, so
:math:`\|T_\text{g} T_i \vec q - T_\text{g} T_j \vec k\| = \|T_i \vec q - T_j \vec k\|`
and the logits (line 7) do not change.  In line 10 the weights sum to 1, so
:math:`\sum_j a_{ij} T_\text{g} T_j \vec v = T_\text{g} \sum_j a_{ij} T_j \vec v` (an
affine map commutes with an affine combination), and
:math:`(T_\text{g} T_i)^{-1} T_\text{g} = T_i^{-1}` removes it again.  Without that last
map (the value points left in global coordinates) the output would rotate and
translate with the input: the negative control in ``tests/test_ipa.py``.

**Implementation** (the model followed is OpenFold's ``InvariantPointAttention`` in
``openfold/model/structure_module.py``: same parameter names ``linear_q``, ``linear_kv``,
``linear_q_points``, ``linear_kv_points``, ``linear_b``, ``head_weights``,
``linear_out``, same weight layouts, including the point projections' ``[3, H * P]``
output order, and the same concatenation order in line 11, so OpenFold weights load
into this module by name).  Three changes that give the same numbers (up to rounding)
with less work or more precision:

* The point term is expanded,
  :math:`\|x - y\|^2 = \|x\|^2 + \|y\|^2 - 2 x^\top y`, and the
  :math:`\|T_i \vec q_i\|^2` part is dropped: it does not depend on ``j``, and a softmax
  does not see a per-row constant.  The scalar and point parts of the logit then form
  one matrix product over ``c_hidden + 3 n_qk_points`` channels, and the
  ``[*, N, N, H, P, 3]`` difference tensor of OpenFold is never formed.  Global points
  are first centred on the mean frame origin (a common shift, which does not change
  distances) to limit cancellation in the expansion.  Measured invariance errors under a
  global rigid motion: ~1e-14 in float64, ~1e-6 in float32 (1e-5 for frames 50 units
  away from the origin).
* ``o``, the value points (line 10) share one matrix product with the attention
  weights.
* The mask adds ``-inf`` (the large number ``inf``) to the logits of masked *keys*;
  OpenFold adds it for masked queries too (a constant per masked row, which changes
  nothing in exact arithmetic).  Outputs at masked residues are computed but meaningless.

Under ``torch.autocast`` the point products run in half precision like the rest (OpenFold
keeps the value-point sum in float32); run the module in float32 where point precision matters.

The supplement writes ``LinearNoBias`` (Glorot init) in lines 1-3 and 6; AlphaFold's
released code and OpenFold give these layers biases and LeCun-normal weights, and so does
this module (std :math:`1/\sqrt{\text{fan\_in}}`, here untruncated, zero biases);
the order of the features in line 11 is OpenFold's, a permutation of the supplement's
(the same function up to a permutation of ``linear_out``'s columns).  ``linear_out`` is
zero-initialised (AF2's "final" init, so a freshly built module outputs exactly 0 and an
IPA block starts as the identity of its residual stream) unless ``zero_init_out=False``.
**Tests and invariance checks must set random weights there** (``zero_init_out=False``),
or they test nothing.

>>> import torch
>>> from minequi.rigid import Rigid
>>> from minequi.testing import rand_rotation
>>> _ = torch.manual_seed(0)
>>> ipa = InvariantPointAttention(c_s=8, c_z=4, c_hidden=6, n_heads=2, n_qk_points=3,
...                               n_v_points=2, zero_init_out=False).double()
>>> N = 5
>>> s, z = torch.randn(N, 8, dtype=torch.float64), torch.randn(N, N, 4, dtype=torch.float64)
>>> frames = Rigid(rand_rotation(N), torch.randn(N, 3, dtype=torch.float64))
>>> out = ipa(s, z, frames)
>>> out.shape
torch.Size([5, 8])
>>> g = Rigid(rand_rotation(), torch.randn(3, dtype=torch.float64))  # one global motion
>>> bool((ipa(s, z, g.compose(frames)) - out).abs().max() < 1e-12)
True
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .rigid import Rigid

__all__ = ["InvariantPointAttention"]


def _lecun_linear(c_in: int, c_out: int, bias: bool = True) -> nn.Linear:
    """``nn.Linear`` with LeCun-normal weights (std ``1/sqrt(c_in)``) and zero bias (AF2's default init)."""
    lin = nn.Linear(c_in, c_out, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(0.0, 1.0 / math.sqrt(c_in))
        if bias:
            lin.bias.zero_()
    return lin


class InvariantPointAttention(nn.Module):
    r"""Invariant Point Attention (AF2 suppl. Algorithm 22; OpenFold's naming and layouts).

    Args:
        c_s: channels of the single representation ``s``.
        c_z: channels of the pair representation ``z``.
        c_hidden: channels per head of the scalar queries, keys and values (``c`` in line 7).
        n_heads: number of heads ``H``.
        n_qk_points: query/key points per head (:math:`N_\text{query points}`).
        n_v_points: value points per head (:math:`N_\text{point values}`).
        inf: the large number added (negated) to the logits of masked keys (OpenFold: 1e5).
        eps: added under the square root of the value-point norms (line 11), as OpenFold.
        zero_init_out: zero-initialise ``linear_out`` (AF2's "final" init; output 0 at init).

    Forward:
        ``s [..., N, c_s]``, ``z [..., N, N, c_z]``, ``frames`` a :class:`Rigid` of batch
        shape ``[..., N]``, ``mask [..., N]`` (bool or 0/1 floats, optional; 1 = present; a float
        mask is read as present where nonzero, so no value can *raise* a key's logit)
        -> ``[..., N, c_s]``.  Inputs, frames and parameters share one dtype and device
        (``TypeError`` otherwise); wrong shapes raise ``ValueError``.
    """

    def __init__(self, c_s: int, c_z: int, c_hidden: int, n_heads: int, n_qk_points: int, n_v_points: int,
                 inf: float = 1e5, eps: float = 1e-8, zero_init_out: bool = True):
        super().__init__()
        for name, v in (("c_s", c_s), ("c_z", c_z), ("c_hidden", c_hidden), ("n_heads", n_heads),
                        ("n_qk_points", n_qk_points), ("n_v_points", n_v_points)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"InvariantPointAttention: {name} must be a positive int, got {v!r}")
        if isinstance(inf, bool) or not isinstance(inf, (int, float)) or not 0 < inf < math.inf:
            raise ValueError(f"InvariantPointAttention: inf must be a positive finite number (the penalty of "
                             f"masked keys), got {inf!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
            raise ValueError(f"InvariantPointAttention: eps must be a non-negative finite number, got {eps!r}")
        self.c_s, self.c_z, self.c_hidden = c_s, c_z, c_hidden
        self.n_heads, self.n_qk_points, self.n_v_points = n_heads, n_qk_points, n_v_points
        self.inf, self.eps = float(inf), float(eps)

        H, C, Pq, Pv = n_heads, c_hidden, n_qk_points, n_v_points
        self.linear_q = _lecun_linear(c_s, H * C)  # line 1
        self.linear_kv = _lecun_linear(c_s, 2 * H * C)  # line 1, [H, 2C] = (k, v) per head
        self.linear_q_points = _lecun_linear(c_s, 3 * H * Pq)  # line 2, [3, H * Pq]
        self.linear_kv_points = _lecun_linear(c_s, 3 * H * (Pq + Pv))  # lines 2-3, [3, H * (Pq + Pv)]
        self.linear_b = _lecun_linear(c_z, H)  # line 6
        # gamma^h = softplus(head_weights) = 1 at init: head_weights = log(e - 1)
        self.head_weights = nn.Parameter(torch.full((H,), math.log(math.e - 1.0)))
        self.linear_out = _lecun_linear(H * (C + 4 * Pv + c_z), c_s)  # line 11
        if zero_init_out:
            with torch.no_grad():
                self.linear_out.weight.zero_()

    def extra_repr(self) -> str:
        return (f"c_s={self.c_s}, c_z={self.c_z}, c_hidden={self.c_hidden}, n_heads={self.n_heads}, "
                f"n_qk_points={self.n_qk_points}, n_v_points={self.n_v_points}")

    def _check(self, s, z, frames, mask):
        w = self.linear_q.weight
        if not isinstance(s, torch.Tensor) or not isinstance(z, torch.Tensor):
            raise TypeError("InvariantPointAttention: s and z must be tensors")
        if not isinstance(frames, Rigid):
            raise TypeError(f"InvariantPointAttention: frames must be a minequi.rigid.Rigid of batch shape [..., N], "
                            f"got {type(frames).__name__}")
        if s.dim() < 2 or s.shape[-1] != self.c_s:
            raise ValueError(f"InvariantPointAttention: s must have shape [..., N, c_s={self.c_s}], "
                             f"got {list(s.shape)}")
        lead, n = s.shape[:-2], s.shape[-2]
        if z.shape != (*lead, n, n, self.c_z):
            raise ValueError(f"InvariantPointAttention: z must have shape [..., N, N, c_z] = "
                             f"{[*lead, n, n, self.c_z]} (from s {list(s.shape)}), got {list(z.shape)}")
        if frames.shape != s.shape[:-1]:
            raise ValueError(f"InvariantPointAttention: frames must have batch shape [..., N] = {list(s.shape[:-1])} "
                             f"(from s {list(s.shape)}), got {list(frames.shape)}")
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.shape != s.shape[:-1]:
                raise ValueError(f"InvariantPointAttention: mask must be a [..., N] = {list(s.shape[:-1])} tensor, "
                                 f"got {list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
            if not (mask.dtype == torch.bool or mask.is_floating_point()):
                raise TypeError(f"InvariantPointAttention: mask must be bool or floating, got {mask.dtype}")
        if not s.dtype == z.dtype == frames.dtype == w.dtype or not s.device == z.device == frames.device == w.device:
            raise TypeError(
                f"InvariantPointAttention: s is {s.dtype} on {s.device}, z is {z.dtype} on {z.device}, frames are "
                f"{frames.dtype} on {frames.device} and the parameters are {w.dtype} on {w.device}; they must match "
                f"(use .to(...))")

    def forward(self, s: torch.Tensor, z: torch.Tensor, frames: Rigid,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``s [..., N, c_s]``, ``z [..., N, N, c_z]``, ``frames`` :class:`Rigid` ``[..., N]``, ``mask [..., N]``
        -> ``[..., N, c_s]`` (Algorithm 22, lines 1-11; see the module docstring)."""
        self._check(s, z, frames, mask)
        H, C, Pq, Pv = self.n_heads, self.c_hidden, self.n_qk_points, self.n_v_points
        lead = s.shape[:-2]  # [*]

        # line 1: scalar queries, keys, values
        q = self.linear_q(s).unflatten(-1, (H, C))  # [*, N, H, C]
        k, v = self.linear_kv(s).unflatten(-1, (H, 2 * C)).split(C, dim=-1)  # 2 x [*, N, H, C]

        # lines 2-3: points in the local frames, mapped to global coordinates by T_i
        # (OpenFold's layout: the 3 * H * P outputs are [3, H * P], coordinate-major)
        q_pts = self.linear_q_points(s).unflatten(-1, (3, H * Pq)).transpose(-1, -2)  # [*, N, H*Pq, 3]
        kv_pts = self.linear_kv_points(s).unflatten(-1, (3, H * (Pq + Pv))).transpose(-1, -2)  # [*, N, H*(Pq+Pv), 3]
        centre = frames.translations.mean(dim=-2, keepdim=True).detach()  # [*, 1, 3] (a common shift, see above)
        local_to_centred = Rigid(frames.rotations, frames.translations - centre, validate=False)[..., None]  # [*, N, 1]
        q_pts = local_to_centred.apply(q_pts).unflatten(-2, (H, Pq))  # [*, N, H, Pq, 3]
        kv_pts = local_to_centred.apply(kv_pts).unflatten(-2, (H, Pq + Pv))  # [*, N, H, Pq+Pv, 3]
        k_pts, v_pts = kv_pts.split([Pq, Pv], dim=-2)  # [*, N, H, Pq, 3], [*, N, H, Pv, 3]

        # lines 4-7: logits = w_L (q.k / sqrt(c) + b - gamma w_C / 2 sum_p |q_p - k_p|^2), expanded:
        # -gamma w_C / 2 |q - k|^2 = gamma w_C q.k - gamma w_C / 2 |k|^2 - (a row constant, dropped)
        w_L = math.sqrt(1.0 / 3.0)
        w_C = math.sqrt(2.0 / (9.0 * Pq))
        gamma = nn.functional.softplus(self.head_weights)  # [H]
        point_scale = (w_L * w_C) * gamma[:, None]  # [H, 1]
        q_cat = torch.cat([q * (w_L / math.sqrt(C)), q_pts.flatten(-2) * point_scale], dim=-1)  # [*, N, H, C+3Pq]
        k_cat = torch.cat([k, k_pts.flatten(-2)], dim=-1)  # [*, N, H, C+3Pq]
        logits = q_cat.transpose(-2, -3) @ k_cat.permute(*range(len(lead)), -2, -1, -3)  # [*, H, N, N]
        k_sq = (k_pts * k_pts).sum(dim=(-1, -2))  # [*, N, H]
        logits = logits - (0.5 * point_scale * k_sq.transpose(-1, -2)).unsqueeze(-2)  # [*, H, N, N]
        b = self.linear_b(z)  # [*, N, N, H] (line 6)
        logits = logits + w_L * b.permute(*range(len(lead)), -1, -3, -2)  # [*, H, N, N]
        if mask is not None:
            present = mask if mask.dtype == torch.bool else mask != 0  # [*, N] (float masks: nonzero = present)
            key_bias = (present.to(s.dtype) - 1.0) * self.inf  # [*, N]: 0 present, -inf masked
            logits = logits + key_bias[..., None, None, :]  # [*, H, N, N]
        a = torch.softmax(logits, dim=-1)  # [*, H, N, N]

        # lines 9-10: scalar values and global value points share one product with a
        v_cat = torch.cat([v, v_pts.flatten(-2)], dim=-1).transpose(-2, -3)  # [*, H, N, C+3Pv]
        o_cat = (a @ v_cat).transpose(-2, -3)  # [*, N, H, C+3Pv]
        o, o_pt = o_cat.split([C, 3 * Pv], dim=-1)  # [*, N, H, C], [*, N, H, 3Pv]
        o_pt = local_to_centred[..., None].invert_apply(o_pt.unflatten(-1, (Pv, 3)))  # [*, N, H, Pv, 3] local (line 10)
        o_pt_norm = torch.sqrt((o_pt * o_pt).sum(dim=-1) + self.eps)  # [*, N, H, Pv]

        # line 8: pair values
        o_pair = a.transpose(-2, -3) @ z  # [*, N, H, c_z]

        # line 11: OpenFold's order (o, o_pt x, y, z, |o_pt|, o_pair), each flattened over (H, .)
        o_pt = o_pt.flatten(-3, -2)  # [*, N, H*Pv, 3]
        feats = torch.cat([o.flatten(-2), *o_pt.unbind(dim=-1), o_pt_norm.flatten(-2), o_pair.flatten(-2)],
                          dim=-1)  # [*, N, H*(C+4Pv+c_z)]
        return self.linear_out(feats)  # [*, N, c_s]
