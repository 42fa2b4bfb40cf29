r"""Irreducible representations of O(3) and their direct sums: ``Irrep`` and ``Irreps``.

An irrep of O(3) = SO(3) x {+I, -I} is a pair ``(l, p)``: the degree
``l = 0, 1, 2, ...`` of the SO(3) representation and the parity ``p = +1``
("e", even) or ``-1`` ("o", odd) by which the inversion ``-I`` acts.  As in e3nn
it is written ``"1o"``, and a direct sum is written ``"16x0e+8x1o+4x2e"``
(multiplicity ``x`` irrep).  Components are laid out irrep by irrep,
multiplicity-major (see :mod:`minequi.conventions`).

For ``Q`` in O(3),

.. math:: D^{l,p}(Q) = p^{k}\, D^l(\det(Q)\, Q), \qquad k = (1 - \det Q)/2,

with :math:`D^l` the real Wigner matrix of :func:`minequi.wigner_D`.
"""
from __future__ import annotations

import operator
import re
from typing import Iterable

import torch

from .so3 import check_orthogonal, wigner_D

__all__ = ["Irrep", "Irreps", "MulIr"]

_IRREP_RE = re.compile(r"^\s*(\d+)\s*([eo])\s*$")
_MULIR_RE = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+)\s*([eo])\s*$")
_PARITY = {"e": 1, "o": -1}


def _as_int(v):
    """``v`` as a Python int if it is an integer (numpy ints included, bools excluded), else ``None``."""
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


class Irrep(tuple):
    r"""An irrep ``(l, p)`` of O(3); an immutable tuple with ``.l`` and ``.p``.

    Build it from a string ``"<l><e|o>"``, from ``(l, p)`` or from another Irrep.

    >>> Irrep("1o")
    1o
    >>> Irrep(2, 1), Irrep((1, -1)) == Irrep("1o"), Irrep("2e").dim
    (2e, True, 5)
    >>> Irrep("1o").D_from_matrix(-torch.eye(3)).diagonal()    # inversion acts by p on a polar vector
    tensor([-1., -1., -1.])
    """

    def __new__(cls, l, p=None):
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, str):
                m = _IRREP_RE.match(l)
                if m is None:
                    raise ValueError(
                        f"invalid irrep string {l!r}: expected '<l><p>' with l a non-negative "
                        f"integer and p in {{e, o}}, e.g. '0e' or '1o'"
                    )
                return super().__new__(cls, (int(m.group(1)), _PARITY[m.group(2)]))
            if isinstance(l, (tuple, list)) and len(l) == 2:
                l, p = l
            else:
                raise TypeError(f"Irrep expects a string like '1o', a pair (l, p) or an Irrep, got {l!r}")
        li, pi = _as_int(l), _as_int(p)
        if li is None or li < 0:
            raise ValueError(f"irrep degree l must be a non-negative int, got {l!r}")
        if pi not in (1, -1):
            raise ValueError(f"irrep parity p must be +1 (even, 'e') or -1 (odd, 'o'), got {p!r}")
        return super().__new__(cls, (li, pi))

    def __getnewargs__(self):  # pickling / copying
        return tuple(self)

    @property
    def l(self) -> int:
        return self[0]

    @property
    def p(self) -> int:
        return self[1]

    @property
    def dim(self) -> int:
        return 2 * self.l + 1

    def __repr__(self):
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    __str__ = __repr__

    def __mul__(self, other):
        """``Irrep * Irrep`` is not defined (it is a sum of irreps); ``Irrep * int`` gives ``Irreps``."""
        if isinstance(other, int) and not isinstance(other, bool):
            return Irreps([(other, self)])
        return NotImplemented

    __rmul__ = __mul__

    def D_from_matrix(self, Q: torch.Tensor) -> torch.Tensor:
        r""":math:`D^{l,p}(Q) = p^k D^l(\det(Q) Q)`, ``[..., 2l+1, 2l+1]``, for ``Q`` in O(3) ``[..., 3, 3]``.

        ``ValueError`` if ``Q`` is not ``[..., 3, 3]`` or not orthogonal.

        >>> Irrep("1e").D_from_matrix(-torch.eye(3, dtype=torch.float64)).diagonal()
        tensor([1., 1., 1.], dtype=torch.float64)
        """
        check_orthogonal(Q, "Q")
        det = torch.linalg.det(Q)  # [...], +-1
        sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))  # [...]
        D = wigner_D(self.l, Q * sign[..., None, None])  # [..., n, n]
        if self.p == -1:
            D = D * sign[..., None, None]
        return D


class MulIr(tuple):
    """A pair ``(mul, ir)``: ``mul`` copies of the irrep ``ir`` (attributes ``.mul``, ``.ir``, ``.dim``)."""

    def __new__(cls, mul, ir):
        m = _as_int(mul)
        if m is None or m < 0:
            raise ValueError(f"multiplicity must be a non-negative int, got {mul!r}")
        return super().__new__(cls, (m, Irrep(ir)))

    def __getnewargs__(self):
        return tuple(self)

    @property
    def mul(self) -> int:
        return self[0]

    @property
    def ir(self) -> Irrep:
        return self[1]

    @property
    def dim(self) -> int:
        return self.mul * self.ir.dim

    def __repr__(self):
        return f"{self.mul}x{self.ir}"


def _parse_irreps(s: str):
    if s.strip() == "":
        return []
    out = []
    for term in s.split("+"):
        m = _MULIR_RE.match(term)
        if m is None:
            raise ValueError(
                f"invalid irreps string {s!r} (bad term {term!r}): expected terms '<mul>x<l><p>' "
                f"or '<l><p>' joined by '+', with mul and l non-negative integers and p in {{e, o}}, "
                f"e.g. '16x0e+8x1o+2e'"
            )
        mul = int(m.group(1)) if m.group(1) is not None else 1
        out.append(MulIr(mul, (int(m.group(2)), _PARITY[m.group(3)])))
    return out


class Irreps(tuple):
    r"""A direct sum of O(3) irreps with multiplicities: an immutable tuple of ``(mul, ir)``.

    Build it from a string ``"16x0e+8x1o"``, an :class:`Irrep`, another ``Irreps``,
    or a list of ``(mul, ir)`` with ``ir`` an Irrep, a string or ``(l, p)``.
    The string form round-trips (``"1o"`` prints as ``"1x1o"``, as in e3nn).

    >>> irreps = Irreps("16x0e+8x1o+4x2e")
    >>> irreps, irreps.dim, irreps.num_irreps, irreps.lmax
    (16x0e+8x1o+4x2e, 60, 28, 2)
    >>> [(mul, str(ir)) for mul, ir in irreps]
    [(16, '0e'), (8, '1o'), (4, '2e')]
    >>> irreps.slices()
    [slice(0, 16, None), slice(16, 40, None), slice(40, 60, None)]
    >>> Irreps([(2, (1, -1))]) + Irreps("0e") == Irreps("2x1o+1x0e")
    True
    """

    def __new__(cls, irreps=None):
        if irreps is None:
            items = []
        elif isinstance(irreps, Irreps):
            return irreps
        elif isinstance(irreps, Irrep):
            items = [MulIr(1, irreps)]
        elif isinstance(irreps, str):
            items = _parse_irreps(irreps)
        elif isinstance(irreps, Iterable):
            items = []
            for entry in irreps:
                if isinstance(entry, Irrep) or isinstance(entry, str):
                    items.append(MulIr(1, entry))
                elif isinstance(entry, (tuple, list)) and len(entry) == 2:
                    items.append(MulIr(entry[0], entry[1]))
                else:
                    raise ValueError(
                        f"invalid Irreps entry {entry!r}: expected (mul, ir) with ir an Irrep, "
                        f"a string like '1o' or a pair (l, p)"
                    )
        else:
            raise TypeError(f"Irreps expects a string, an Irrep or a list of (mul, ir), got {type(irreps).__name__}")
        return super().__new__(cls, items)

    def __repr__(self):
        return "+".join(repr(mul_ir) for mul_ir in self)

    __str__ = __repr__

    def __add__(self, other):
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other):
        return Irreps(other) + self

    def __mul__(self, n):
        """Repeat the sum ``n`` times (as for tuples), returning ``Irreps``."""
        if isinstance(n, Irreps):
            raise TypeError("Irreps * Irreps is not defined; use a tensor product")
        return Irreps(tuple.__mul__(self, n))

    __rmul__ = __mul__

    def __getitem__(self, i):
        item = tuple.__getitem__(self, i)
        return Irreps(item) if isinstance(i, slice) else item

    @property
    def dim(self) -> int:
        """Total dimension ``sum(mul * (2l + 1))``."""
        return sum(mul_ir.dim for mul_ir in self)

    @property
    def num_irreps(self) -> int:
        """Number of irreps counted with multiplicity, ``sum(mul)``."""
        return sum(mul_ir.mul for mul_ir in self)

    @property
    def ls(self) -> list:
        """The degree of every irrep copy, in layout order."""
        return [ir.l for mul, ir in self for _ in range(mul)]

    @property
    def lmax(self) -> int:
        """Largest ``l`` (``ValueError`` for an empty Irreps)."""
        if len(self) == 0:
            raise ValueError("lmax of an empty Irreps is undefined")
        return max(ir.l for _, ir in self)

    def slices(self) -> list:
        """One python ``slice`` into the feature dimension per ``(mul, ir)`` entry."""
        out, start = [], 0
        for mul_ir in self:
            out.append(slice(start, start + mul_ir.dim))
            start += mul_ir.dim
        return out

    def simplify(self) -> "Irreps":
        """Merge consecutive entries with the same irrep and drop zero multiplicities.

        >>> Irreps("1x0e+2x0e+0x1o+1x1o").simplify()
        3x0e+1x1o
        """
        out = []
        for mul, ir in self:
            if mul == 0:
                continue
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            else:
                out.append((mul, ir))
        return Irreps(out)

    def sort(self) -> "Irreps":
        """Entries sorted (stably) by ``l``, odd before even for equal ``l`` (i.e. by the pair ``(l, p)``).

        >>> Irreps("1e+0e+1o").sort()
        1x0e+1x1o+1x1e
        """
        return Irreps(sorted(self, key=lambda mul_ir: (mul_ir.ir.l, mul_ir.ir.p)))

    def randn(self, *size, dtype=None, device=None, generator=None) -> torch.Tensor:
        """Standard normal features (every component ~ N(0, 1)) in one of two forms.

        * ``randn(*batch)``: shape ``[*batch, dim]``, the irreps dimension last (``randn()``
          gives ``[dim]``; a single tuple or ``torch.Size`` is read as ``batch``, as in
          ``torch.randn``).
        * e3nn's form: exactly one ``-1`` in ``size`` marks where the irreps dimension goes,
          so ``randn(10, -1)`` is ``[10, dim]`` and ``randn(-1, 5)`` is ``[dim, 5]``.

        Every other entry must be a non-negative int; a second ``-1``, another negative
        number or a non-integer raises a ``ValueError``/``TypeError`` naming it.
        (e3nn's ``normalization="norm"`` is not offered: these are component-normalized.)

        >>> irreps = Irreps("2x1o")
        >>> irreps.randn(4, 5).shape, irreps.randn(10, -1).shape, irreps.randn(-1, 5).shape
        (torch.Size([4, 5, 6]), torch.Size([10, 6]), torch.Size([6, 5]))
        >>> irreps.randn(-1, -1)
        Traceback (most recent call last):
        ...
        ValueError: Irreps.randn: size may contain at most one -1 (the irreps dimension), got (-1, -1)
        """
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        dims = []
        for i, n in enumerate(size):
            ni = _as_int(n)
            if ni is None:
                raise TypeError(f"Irreps.randn: size entries must be ints, got {n!r} at position {i} "
                                f"of {tuple(size)!r}")
            if ni < -1:
                raise ValueError(f"Irreps.randn: size entries must be non-negative, or -1 to mark "
                                 f"the irreps dimension, got {ni} at position {i} of {tuple(size)!r}")
            dims.append(ni)
        count = dims.count(-1)
        if count > 1:
            raise ValueError(f"Irreps.randn: size may contain at most one -1 (the irreps dimension), "
                             f"got {tuple(size)!r}")
        if count == 0:
            dims.append(self.dim)  # current form: irreps dimension last
        else:
            dims[dims.index(-1)] = self.dim  # e3nn's form
        return torch.randn(*dims, dtype=dtype, device=device, generator=generator)  # [*size, dim] or size with -1 -> dim

    def check_features(self, x, name: str = "x", label: str = "irreps") -> None:
        """Raise a clear error unless ``x`` is a tensor of shape ``[..., dim]``.

        Every layer on irreps features validates its inputs with this one method, so
        the messages name the argument, the irreps and the expected last dimension.

        >>> Irreps("2x0e+1x1o").check_features(torch.zeros(4, 5))
        >>> Irreps("2x0e+1x1o").check_features(torch.zeros(4, 3), "x1")
        Traceback (most recent call last):
        ...
        ValueError: x1 must have shape [..., 5] for irreps 2x0e+1x1o, got (4, 3)
        """
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape [..., {self.dim}] for {label} {self}, "
                             f"got {tuple(x.shape)}")

    def D_from_matrix(self, Q: torch.Tensor) -> torch.Tensor:
        r"""Block-diagonal representation ``[..., dim, dim]`` of ``Q`` in O(3) ``[..., 3, 3]``.

        Block ``i`` is :meth:`Irrep.D_from_matrix` of the ``i``-th irrep copy, so a
        feature ``f`` ``[..., dim]`` transforms as ``f @ D.T``.

        >>> Q = -torch.eye(3, dtype=torch.float64)
        >>> Irreps("0e+0o+1o").D_from_matrix(Q).diagonal()
        tensor([ 1., -1., -1., -1., -1.], dtype=torch.float64)
        """
        check_orthogonal(Q, "Q")
        batch = Q.shape[:-2]
        D = torch.zeros(*batch, self.dim, self.dim, dtype=Q.dtype, device=Q.device)  # [..., dim, dim]
        cache = {}
        start = 0
        for mul, ir in self:
            if ir not in cache:
                cache[ir] = ir.D_from_matrix(Q)  # [..., 2l+1, 2l+1]
            for _ in range(mul):
                D[..., start: start + ir.dim, start: start + ir.dim] = cache[ir]
                start += ir.dim
        return D
