r"""Finite groups of the plane: the cyclic groups C_N and the dihedral groups D_N.

A finite group is stored concretely, by a faithful 2x2 real matrix for each
element (its action on the plane), and everything else -- the multiplication
table, the inverses, the regular representation, conjugacy classes, characters,
irreducible representations -- is *computed* from those matrices.

Conventions (see :mod:`minequi.conventions`): C_N has elements :math:`r^k`,
``k = 0..N-1``, with :math:`r` the counter-clockwise rotation by :math:`2\pi/N`;
D_N has the ``2N`` elements :math:`r^k m^s` indexed ``k + N*s``, with :math:`m`
the mirror :math:`(x, y) \mapsto (x, -y)`.  The matrix of element ``k + N*s``
is :math:`R(2\pi k/N)\, M^s` with

.. math::
   R(\theta) = \begin{pmatrix} \cos\theta & -\sin\theta \\ \sin\theta & \cos\theta \end{pmatrix},
   \qquad M = \begin{pmatrix} 1 & 0 \\ 0 & -1 \end{pmatrix}.

A *representation* of a group with ``n`` elements is given as a tensor
``rep`` of shape ``[n, d, d]`` with ``rep[g]`` the matrix of element ``g``; it
is a homomorphism when :math:`\rho(g h) = \rho(g)\rho(h)`.  Its *character* is
:math:`\chi(g) = \operatorname{tr} \rho(g)` and the inner product of two
characters is :math:`\langle \chi_1, \chi_2 \rangle = \frac{1}{|G|}\sum_g
\chi_1(g)\, \overline{\chi_2(g)}`.  The exact (sympy) derivation of all of this
is in :mod:`minequi.symbolic.finite`; the tests check that both agree.

>>> G = dihedral_group(4)
>>> G.order, G.names[:4], G.names[4:]
(8, ('e', 'r', 'r^2', 'r^3'), ('m', 'r m', 'r^2 m', 'r^3 m'))
>>> G.names[int(G.table[1, 4])]          # r * m
'r m'
>>> G.names[int(G.table[4, 1])]          # m * r = r^3 m
'r^3 m'
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

import torch

__all__ = ["FiniteGroup", "cyclic_group", "dihedral_group"]

_MATCH_ATOL = 1e-9  # two group matrices are "the same element" when they agree to this


def _rotation(theta: float) -> torch.Tensor:
    """R(theta); entries within 1e-14 of an integer are snapped to it, so that the
    quarter turns of C_4 and D_4 are exact integer matrices (cos(pi/2) = 6e-17 otherwise)."""
    c, s = math.cos(theta), math.sin(theta)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)  # [2, 2]
    return torch.where((R - R.round()).abs() < 1e-14, R.round(), R)


_MIRROR = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)  # [2, 2]


def _check_n(N) -> int:
    if isinstance(N, bool) or not isinstance(N, numbers.Integral):
        raise TypeError(f"N must be a positive int, got {N!r} of type {type(N).__name__}")
    if N < 1:
        raise ValueError(f"N must be a positive int (N >= 1), got {N}")
    return int(N)


@dataclass(frozen=True, eq=False)
class FiniteGroup:
    r"""A finite group given by faithful matrices, with its multiplication table.

    Attributes:
        name: e.g. ``"C4"`` or ``"D4"``.
        names: the element names, in index order (``"e"`` is element 0).
        matrices: ``[|G|, 2, 2]`` float64, the matrix of each element.
        table: ``[|G|, |G|]`` int64, ``table[a, b]`` = index of :math:`g_a g_b`.
        inverse: ``[|G|]`` int64, ``inverse[a]`` = index of :math:`g_a^{-1}`.

    Build one with :func:`cyclic_group`, :func:`dihedral_group` or
    :meth:`from_matrices` (which computes ``table`` and ``inverse``).

    >>> G = cyclic_group(4)
    >>> G.table
    tensor([[0, 1, 2, 3],
            [1, 2, 3, 0],
            [2, 3, 0, 1],
            [3, 0, 1, 2]])
    >>> G.inverse
    tensor([0, 3, 2, 1])
    """

    name: str
    names: tuple
    matrices: torch.Tensor
    table: torch.Tensor
    inverse: torch.Tensor

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrices(cls, name: str, names, matrices: torch.Tensor) -> "FiniteGroup":
        r"""Compute the multiplication table and inverses of a finite matrix group.

        ``table[a, b]`` is the unique ``c`` with :math:`M_a M_b = M_c` (matched to
        1e-9 and then stored as an integer).  Raises ``ValueError`` if the
        matrices are not closed under products, contain duplicates, or element 0
        is not the identity.

        >>> M = torch.stack([torch.eye(2, dtype=torch.float64), -torch.eye(2, dtype=torch.float64)])
        >>> FiniteGroup.from_matrices("C2", ("e", "r"), M).table
        tensor([[0, 1],
                [1, 0]])
        """
        names = tuple(names)
        if not torch.is_tensor(matrices) or matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2]:
            raise ValueError(f"matrices must be a tensor of shape [n, d, d], got {getattr(matrices, 'shape', type(matrices))}")
        n = matrices.shape[0]
        if len(names) != n:
            raise ValueError(f"names must have one entry per matrix ({n}), got {len(names)}")
        matrices = matrices.to(torch.float64)
        eye = torch.eye(matrices.shape[1], dtype=torch.float64)
        if not torch.allclose(matrices[0], eye, atol=_MATCH_ATOL, rtol=0):
            raise ValueError("element 0 must be the identity matrix")
        dist = (matrices[:, None] - matrices[None, :]).abs().amax(dim=(-1, -2))  # [n, n]
        if ((dist < _MATCH_ATOL).sum(dim=1) != 1).any():
            raise ValueError("matrices contain duplicate elements")
        prod = torch.einsum("aij,bjk->abik", matrices, matrices)  # [n, n, d, d]
        diff = (prod[:, :, None] - matrices[None, None]).abs().amax(dim=(-1, -2))  # [n, n, n]
        hits = diff < _MATCH_ATOL  # [n, n, n]
        if (hits.sum(dim=-1) != 1).any():
            raise ValueError("matrices are not closed under multiplication")
        table = hits.to(torch.int64).argmax(dim=-1)  # [n, n]
        inverse = (table == 0).to(torch.int64).argmax(dim=1)  # [n]
        return cls(name, names, matrices, table, inverse)

    # ------------------------------------------------------------------ basic structure
    @property
    def order(self) -> int:
        """The number of elements :math:`|G|`."""
        return len(self.names)

    def regular_representation(self) -> torch.Tensor:
        r"""The left regular representation: ``[|G|, |G|, |G|]`` float64 permutation matrices.

        :math:`\rho(g)\, e_h = e_{g h}`, i.e. ``rho[g, table[g, h], h] = 1``.  On a
        function on the group stored as a vector ``f`` (``f[h]`` = value at ``h``)
        it acts as left translation: :math:`(\rho(g) f)(x) = f(g^{-1} x)`.  This is
        how a rotation (or flip) of the input moves the group axis of a
        group-convolution feature map.

        >>> G = cyclic_group(3)
        >>> G.regular_representation()[1]
        tensor([[0., 0., 1.],
                [1., 0., 0.],
                [0., 1., 0.]], dtype=torch.float64)
        >>> G.homomorphism_error(G.regular_representation()) == 0.0
        True
        """
        n = self.order
        rho = torch.zeros(n, n, n, dtype=torch.float64)  # [g, row, col]
        g = torch.arange(n)[:, None].expand(n, n)
        h = torch.arange(n)[None, :].expand(n, n)
        rho[g, self.table, h] = 1.0
        return rho

    def conjugacy_classes(self) -> tuple:
        r"""The conjugacy classes :math:`\{x g x^{-1} : x \in G\}`, each a sorted tuple of indices.

        Classes are listed in the order of their smallest element.

        >>> [[dihedral_group(4).names[i] for i in c] for c in dihedral_group(4).conjugacy_classes()]
        [['e'], ['r', 'r^3'], ['r^2'], ['m', 'r^2 m'], ['r m', 'r^3 m']]
        """
        n = self.order
        seen, classes = set(), []
        for g in range(n):
            if g in seen:
                continue
            cls = sorted({int(self.table[self.table[x, g], self.inverse[x]]) for x in range(n)})
            seen.update(cls)
            classes.append(tuple(cls))
        return tuple(classes)

    # ------------------------------------------------------------------ representations
    def _check_rep(self, rep, argname: str = "rep") -> torch.Tensor:
        if not torch.is_tensor(rep) or rep.ndim != 3 or rep.shape[0] != self.order or rep.shape[1] != rep.shape[2]:
            raise ValueError(
                f"{argname} must be a tensor of shape [|G|={self.order}, d, d] for {self.name}, "
                f"got {getattr(rep, 'shape', type(rep))}"
            )
        return rep

    def homomorphism_error(self, rep: torch.Tensor) -> float:
        r"""The largest entry of :math:`|\rho(g)\rho(h) - \rho(g h)|` over all pairs ``(g, h)``.

        Zero (up to rounding) exactly when ``rep`` is a representation.

        >>> G = dihedral_group(4)
        >>> G.homomorphism_error(G.matrices) < 1e-12
        True
        >>> G.homomorphism_error(G.matrices.flip(0)) > 0.5    # a relabelling breaks it
        True
        """
        rep = self._check_rep(rep)
        prod = torch.einsum("aij,bjk->abik", rep, rep)  # [n, n, d, d]
        return float((prod - rep[self.table]).abs().max())

    def character(self, rep: torch.Tensor) -> torch.Tensor:
        r"""The character :math:`\chi(g) = \operatorname{tr}\rho(g)`: ``[|G|, d, d] -> [|G|]``.

        >>> dihedral_group(4).character(dihedral_group(4).matrices)
        tensor([ 2.,  0., -2.,  0.,  0.,  0.,  0.,  0.], dtype=torch.float64)
        """
        rep = self._check_rep(rep)
        return torch.einsum("gii->g", rep)

    def inner_product(self, chi1: torch.Tensor, chi2: torch.Tensor):
        r""":math:`\langle\chi_1, \chi_2\rangle = \frac{1}{|G|}\sum_g \chi_1(g)\,\overline{\chi_2(g)}`.

        For irreducible (over C) characters this is 1 when they are equal and 0
        otherwise (the first orthogonality relation).

        >>> G = dihedral_group(4)
        >>> chi = G.character(G.matrices)
        >>> float(G.inner_product(chi, chi))
        1.0
        """
        for arg, chi in (("chi1", chi1), ("chi2", chi2)):
            if not torch.is_tensor(chi) or chi.shape != (self.order,):
                raise ValueError(f"{arg} must be a tensor of shape [|G|={self.order}], got {getattr(chi, 'shape', type(chi))}")
        return (chi1 * chi2.conj()).sum() / self.order

    def irreps(self) -> dict:
        r"""The real irreducible representations, as ``{name: [|G|, d, d] float64}``.

        For D_N (element ``k + N*s`` = :math:`r^k m^s`):

        * ``A1``: trivial; ``A2``: :math:`(-1)^s` (the determinant);
        * for even N also ``B1``: :math:`(-1)^k` and ``B2``: :math:`(-1)^{k+s}`;
        * ``E1``, ``E2``, ... ``Ej`` for :math:`1 \le j < N/2`: :math:`R(2\pi jk/N)\, M^s`
          (``E1`` is the defining representation on the plane).

        All are absolutely irreducible and :math:`\sum_i d_i^2 = 2N`.

        For C_N (element ``k`` = :math:`r^k`): ``A`` (trivial), ``B`` = :math:`(-1)^k`
        for even N, and ``Ej`` = :math:`R(2\pi jk/N)` for :math:`1 \le j < N/2`.  The
        2-dimensional ``Ej`` are irreducible over the reals but split over C into
        the two characters :math:`e^{\pm 2\pi i jk/N}`, so for them
        :math:`\langle\chi,\chi\rangle = 2`; :meth:`decompose` accounts for that.

        >>> {k: tuple(v.shape) for k, v in dihedral_group(4).irreps().items()}
        {'A1': (8, 1, 1), 'A2': (8, 1, 1), 'B1': (8, 1, 1), 'B2': (8, 1, 1), 'E1': (8, 2, 2)}
        >>> {k: tuple(v.shape) for k, v in cyclic_group(5).irreps().items()}
        {'A': (5, 1, 1), 'E1': (5, 2, 2), 'E2': (5, 2, 2)}
        """
        kind, N = self._family()
        n, dihedral = self.order, kind == "D"
        idx = torch.arange(n)
        k, s = idx % N, idx // N  # rotation power and mirror bit of each element
        sign = lambda e: (1.0 - 2.0 * (e % 2)).to(torch.float64).reshape(n, 1, 1)  # (-1)^e as [n, 1, 1]
        out = {}
        if dihedral:
            out["A1"] = torch.ones(n, 1, 1, dtype=torch.float64)
            out["A2"] = sign(s)
            if N % 2 == 0:
                out["B1"] = sign(k)
                out["B2"] = sign(k + s)
        else:
            out["A"] = torch.ones(n, 1, 1, dtype=torch.float64)
            if N % 2 == 0:
                out["B"] = sign(k)
        for j in range(1, (N + 1) // 2):
            rot = torch.stack([_rotation(2 * math.pi * j * int(kk) / N) for kk in k])  # [n, 2, 2]
            mir = torch.stack([torch.linalg.matrix_power(_MIRROR, int(ss)) for ss in s])  # [n, 2, 2]
            out[f"E{j}"] = rot @ mir
        return out

    def _family(self):
        """``("C", N)`` or ``("D", N)`` from the name, checked against the order."""
        match = re.fullmatch(r"([CD])([0-9]+)", self.name)
        if match is None or self.order != int(match.group(2)) * (2 if match.group(1) == "D" else 1):
            raise ValueError(f"irreps are known only for groups built by cyclic_group / dihedral_group, not {self.name!r}")
        return match.group(1), int(match.group(2))

    def decompose(self, rep: torch.Tensor) -> dict:
        r"""Multiplicity of each real irrep in a real representation: ``{name: int}``.

        The multiplicity of irrep :math:`\rho_i` is
        :math:`\langle\chi, \chi_i\rangle / \langle\chi_i, \chi_i\rangle` (the
        denominator is 1 for absolutely irreducible :math:`\rho_i`, and 2 for the
        2-dimensional real irreps of C_N).  Raises ``ValueError`` if a
        multiplicity is not an integer (``rep`` is not real) or ``rep`` is not a
        homomorphism.

        >>> G = dihedral_group(4)
        >>> G.decompose(G.regular_representation())     # each irrep d_i times
        {'A1': 1, 'A2': 1, 'B1': 1, 'B2': 1, 'E1': 2}
        """
        if torch.is_tensor(rep) and rep.is_complex():
            raise ValueError("decompose expects a real representation (float tensor [|G|, d, d]); got a complex one")
        err = self.homomorphism_error(rep)
        if not err < 1e-8:
            raise ValueError(f"rep is not a representation of {self.name}: max |rho(g)rho(h) - rho(gh)| = {err:.2e}")
        chi = self.character(rep)
        out = {}
        for name, irrep in self.irreps().items():
            chi_i = self.character(irrep)
            m = float(self.inner_product(chi, chi_i) / self.inner_product(chi_i, chi_i))
            if abs(m - round(m)) > 1e-6:
                raise ValueError(f"rep has non-integer multiplicity {m:.4f} of {name}: not a real representation of {self.name}")
            out[name] = int(round(m))
        return out


def cyclic_group(N: int) -> FiniteGroup:
    r"""The cyclic group C_N of rotations of the plane by multiples of :math:`2\pi/N`.

    Element ``k`` is :math:`r^k` with matrix :math:`R(2\pi k/N)` (counter-clockwise),
    so ``table[a, b] = (a + b) mod N``.

    >>> G = cyclic_group(4)
    >>> G.name, G.order, G.names
    ('C4', 4, ('e', 'r', 'r^2', 'r^3'))
    >>> G.matrices[1].round()        # rotation by 90 degrees: (1, 0) -> (0, 1)
    tensor([[ 0., -1.],
            [ 1.,  0.]], dtype=torch.float64)
    """
    N = _check_n(N)
    names = tuple("e" if k == 0 else "r" if k == 1 else f"r^{k}" for k in range(N))
    mats = torch.stack([_rotation(2 * math.pi * k / N) for k in range(N)])  # [N, 2, 2]
    return FiniteGroup.from_matrices(f"C{N}", names, mats)


def dihedral_group(N: int) -> FiniteGroup:
    r"""The dihedral group D_N: the N rotations of C_N and N mirrors.

    Element ``k + N*s`` is :math:`r^k m^s` with matrix :math:`R(2\pi k/N)\, M^s`,
    :math:`M = \mathrm{diag}(1, -1)` the mirror :math:`(x, y) \mapsto (x, -y)`.
    The relations :math:`r^N = m^2 = e` and :math:`m r m = r^{-1}` follow from the
    matrices and show up in the table.

    >>> G = dihedral_group(3)
    >>> G.names
    ('e', 'r', 'r^2', 'm', 'r m', 'r^2 m')
    >>> G.matrices[3]
    tensor([[ 1.,  0.],
            [ 0., -1.]], dtype=torch.float64)
    >>> m, r = 3, 1
    >>> G.names[int(G.table[G.table[m, r], m])]      # m r m = r^-1
    'r^2'
    """
    N = _check_n(N)
    rot = ["e" if k == 0 else "r" if k == 1 else f"r^{k}" for k in range(N)]
    names = tuple(rot) + tuple("m" if k == 0 else f"{rot[k]} m" for k in range(N))
    mats = torch.stack(
        [_rotation(2 * math.pi * k / N) @ torch.linalg.matrix_power(_MIRROR, s) for s in range(2) for k in range(N)]
    )  # [2N, 2, 2]
    return FiniteGroup.from_matrices(f"D{N}", names, mats)
