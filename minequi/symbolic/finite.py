r"""Exact (sympy) derivation of C_N, D_N and their representation theory.

Everything here is exact arithmetic: the group elements are sympy matrices
with entries such as ``sqrt(3)/2``, equality is decided symbolically, and
multiplicities come out as sympy integers.  The numeric module
:mod:`minequi.groups` is tested against these results.

The derivation, in the order the book follows it:

1. :func:`cyclic_group`, :func:`dihedral_group`: the 2x2 matrices
   :math:`R(2\pi k/N)\, M^s` of element ``k + N*s`` (see :mod:`minequi.conventions`)
   and their multiplication table, found by multiplying matrices exactly;
2. :func:`check_group_axioms`: closure, associativity, identity and inverses
   read off the table alone;
3. :func:`regular_representation` and :func:`is_homomorphism`;
4. :func:`conjugacy_classes`;
5. the irreducible representations: the one-dimensional ones are *all*
   homomorphisms to the roots of unity (:func:`one_dimensional_characters`,
   found by trying every image of the generators), the two-dimensional ones are
   the defining representation with :math:`r \mapsto R(2\pi j/N)`
   (:func:`representation_from_generators`); :func:`irreps` collects them and
   proves the list complete (:math:`\sum_i d_i^2 = |G|`, one irrep per class);
6. :func:`character_table` and its two orthogonality relations;
7. :func:`multiplicities`: decomposition of any representation by character
   inner products (the regular one, a tensor product);
8. :func:`intertwiners`: Schur's lemma as an exact null space.

Cost: exact equality of algebraic numbers is cheap when :math:`\cos(2\pi/N)` is
rational or a quadratic irrational (e.g. N = 1, 2, 3, 4, 6, 8: each group and its
irreps in seconds), but for N = 5, 10, ... the entries are nested radicals
and sympy needs minutes; the tests and the book use N <= 8, N != 5, 7.

>>> G = dihedral_group(4)
>>> G.names[G.table[1][4]], G.names[G.table[4][1]]      # r m and m r = r^3 m
('r m', 'r^3 m')
>>> check_group_axioms(G.table)
{'closure': True, 'associativity': True, 'identity': True, 'inverses': True}
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import product

import sympy as sp

__all__ = [
    "ExactGroup",
    "rotation",
    "MIRROR",
    "cyclic_group",
    "dihedral_group",
    "multiplication_table",
    "check_group_axioms",
    "regular_representation",
    "is_homomorphism",
    "conjugacy_classes",
    "representation_from_generators",
    "one_dimensional_characters",
    "irreps",
    "character",
    "inner_product",
    "character_table",
    "check_orthogonality",
    "multiplicities",
    "kron",
    "intertwiners",
]


# ----------------------------------------------------------------------------- exact equality
def _is_zero(x) -> bool:
    """Exact test x == 0 for an algebraic number.

    ``expand`` settles most cases (e.g. ``a + b*sqrt(3)``); a value that is
    numerically far from 0 is certainly nonzero; anything else must be *proven*
    zero: by sympy's ``equals`` (which proves algebraic identities, e.g. via a
    minimal polynomial) or, failing that, by its minimal polynomial being ``t``.
    If sympy cannot decide we raise rather than guess.
    """
    x = sp.expand(x)
    if x == 0:
        return True
    if abs(complex(sp.N(x, 30))) > 1e-20:
        return False
    proven = x.equals(0)
    if proven is not None:
        return bool(proven)
    t = sp.Dummy("t")
    if sp.minimal_polynomial(x, t) == t:
        return True
    raise ArithmeticError(f"could not decide exactly whether {x} is zero")


def _canonical(x):
    """A readable, exact form of an entry: ``expand``, and ``simplify`` only when cheap (few terms)."""
    x = sp.expand(x)
    return sp.simplify(x) if sp.count_ops(x) < 12 else x


def _equal(A: sp.Matrix, B: sp.Matrix) -> bool:
    return A.shape == B.shape and all(_is_zero(a - b) for a, b in zip(A, B))


# ----------------------------------------------------------------------------- the groups
def rotation(theta) -> sp.Matrix:
    r"""The exact rotation matrix :math:`R(\theta)` (counter-clockwise).

    >>> rotation(sp.pi / 2)
    Matrix([
    [0, -1],
    [1,  0]])
    >>> rotation(2 * sp.pi / 3)
    Matrix([
    [    -1/2, -sqrt(3)/2],
    [sqrt(3)/2,      -1/2]])
    """
    return sp.Matrix([[sp.cos(theta), -sp.sin(theta)], [sp.sin(theta), sp.cos(theta)]])


MIRROR = sp.Matrix([[1, 0], [0, -1]])
"""The mirror :math:`m: (x, y) \\mapsto (x, -y)`."""


@dataclass(frozen=True)
class ExactGroup:
    """A finite matrix group in exact arithmetic.

    Attributes:
        name: ``"C4"``, ``"D4"``, ...
        names: element names in index order (element 0 is ``"e"``).
        matrices: tuple of exact 2x2 sympy matrices.
        table: tuple of tuples of ints, ``table[a][b]`` = index of :math:`g_a g_b`.
        generators: ``{"r": 1}`` for C_N, ``{"r": 1, "m": N}`` for D_N (element indices).
    """

    name: str
    names: tuple
    matrices: tuple
    table: tuple
    generators: dict

    @property
    def order(self) -> int:
        return len(self.names)

    @property
    def inverse(self) -> tuple:
        """``inverse[a]`` = the ``b`` with ``table[a][b] == 0``."""
        return tuple(row.index(0) for row in self.table)


def _check_n(N) -> int:
    if isinstance(N, bool) or not isinstance(N, int):
        raise TypeError(f"N must be a positive int, got {N!r} of type {type(N).__name__}")
    if N < 1:
        raise ValueError(f"N must be a positive int (N >= 1), got {N}")
    return N


def _rot_names(N):
    return ["e" if k == 0 else "r" if k == 1 else f"r^{k}" for k in range(N)]


def multiplication_table(matrices) -> tuple:
    r"""``table[a][b]`` = the unique ``c`` with :math:`M_a M_b = M_c`, decided exactly.

    Raises ``ValueError`` if a product is not in the list (not closed) or matches
    several entries (duplicates).

    >>> multiplication_table([sp.eye(2), -sp.eye(2)])
    ((0, 1), (1, 0))
    """
    mats = [sp.Matrix(M) for M in matrices]
    table = []
    for a, A in enumerate(mats):
        row = []
        for b, B in enumerate(mats):
            P = A * B
            hits = [c for c, C in enumerate(mats) if _equal(P, C)]
            if len(hits) != 1:
                raise ValueError(
                    f"product of elements {a} and {b} matches {len(hits)} elements: "
                    + ("not closed under multiplication" if not hits else "duplicate elements")
                )
            row.append(hits[0])
        table.append(tuple(row))
    return tuple(table)


def cyclic_group(N: int) -> ExactGroup:
    r"""C_N exactly: element ``k`` is :math:`r^k`, matrix :math:`R(2\pi k/N)`.

    >>> G = cyclic_group(4)
    >>> G.matrices[1], G.table[1]
    (Matrix([
    [0, -1],
    [1,  0]]), (1, 2, 3, 0))
    """
    N = _check_n(N)
    mats = tuple(rotation(2 * sp.pi * k / N) for k in range(N))
    return ExactGroup(f"C{N}", tuple(_rot_names(N)), mats, multiplication_table(mats), {"r": 1 % N})


def dihedral_group(N: int) -> ExactGroup:
    r"""D_N exactly: element ``k + N*s`` is :math:`r^k m^s`, matrix :math:`R(2\pi k/N)\, M^s`.

    >>> G = dihedral_group(4)
    >>> G.names
    ('e', 'r', 'r^2', 'r^3', 'm', 'r m', 'r^2 m', 'r^3 m')
    >>> G.matrices[5]                   # r m: (x, y) -> (y, x)
    Matrix([
    [0, 1],
    [1, 0]])
    """
    N = _check_n(N)
    rot = _rot_names(N)
    names = tuple(rot) + tuple("m" if k == 0 else f"{rot[k]} m" for k in range(N))
    mats = tuple(rotation(2 * sp.pi * k / N) * MIRROR**s for s in range(2) for k in range(N))
    return ExactGroup(f"D{N}", names, mats, multiplication_table(mats), {"r": 1 % N, "m": N})


# ----------------------------------------------------------------------------- axioms
def check_group_axioms(table) -> dict:
    r"""Check the group axioms from the multiplication table alone.

    * closure: every entry is an element index;
    * associativity: :math:`(ab)c = a(bc)` for all triples;
    * identity: element 0 satisfies :math:`e a = a e = a`;
    * inverses: every ``a`` has a ``b`` with :math:`ab = ba = e`.

    >>> check_group_axioms(((0, 1), (1, 0)))
    {'closure': True, 'associativity': True, 'identity': True, 'inverses': True}
    >>> check_group_axioms(((0, 1), (1, 1)))["inverses"]
    False
    """
    n = len(table)
    T = [list(row) for row in table]
    closure = all(len(row) == n and all(isinstance(c, int) and 0 <= c < n for c in row) for row in T)
    if not closure:
        return {"closure": False, "associativity": False, "identity": False, "inverses": False}
    assoc = all(T[T[a][b]][c] == T[a][T[b][c]] for a in range(n) for b in range(n) for c in range(n))
    ident = all(T[0][a] == a and T[a][0] == a for a in range(n))
    inv = all(any(T[a][b] == 0 and T[b][a] == 0 for b in range(n)) for a in range(n))
    return {"closure": closure, "associativity": assoc, "identity": ident, "inverses": inv}


# ----------------------------------------------------------------------------- representations
def regular_representation(table) -> list:
    r"""The left regular representation: :math:`\rho(g) e_h = e_{gh}`, as exact permutation matrices.

    >>> regular_representation(cyclic_group(3).table)[1]
    Matrix([
    [0, 0, 1],
    [1, 0, 0],
    [0, 1, 0]])
    """
    n = len(table)
    return [sp.Matrix(n, n, lambda i, j: 1 if table[g][j] == i else 0) for g in range(n)]


def is_homomorphism(rep, table) -> bool:
    r"""Exactly check :math:`\rho(g)\rho(h) = \rho(gh)` for all pairs.

    >>> G = dihedral_group(3)
    >>> is_homomorphism(G.matrices, G.table)
    True
    >>> is_homomorphism([M.T for M in G.matrices], G.table)   # g -> M_g^T reverses products
    False
    """
    n = len(table)
    if len(rep) != n:
        raise ValueError(f"rep must have one matrix per group element ({n}), got {len(rep)}")
    return all(_equal(rep[a] * rep[b], rep[table[a][b]]) for a in range(n) for b in range(n))


def conjugacy_classes(table) -> list:
    r"""The conjugacy classes :math:`\{x g x^{-1}\}`, each a sorted list, ordered by smallest element.

    >>> G = dihedral_group(4)
    >>> [[G.names[i] for i in c] for c in conjugacy_classes(G.table)]
    [['e'], ['r', 'r^3'], ['r^2'], ['m', 'r^2 m'], ['r m', 'r^3 m']]
    """
    n = len(table)
    inv = [list(row).index(0) for row in table]
    seen, classes = set(), []
    for g in range(n):
        if g not in seen:
            c = sorted({table[table[x][g]][inv[x]] for x in range(n)})
            seen.update(c)
            classes.append(c)
    return classes


def representation_from_generators(table, images: dict) -> list:
    r"""Extend images of generators to every element by :math:`\rho(s\, h) = \rho(s)\rho(h)`.

    A breadth-first walk of the Cayley graph from the identity; the result is a
    representation exactly when the images satisfy the group's relations, which
    :func:`is_homomorphism` then confirms (or refutes).

    Args:
        table: the multiplication table.
        images: ``{generator index: sympy Matrix}``.

    >>> G = dihedral_group(4)
    >>> rho = representation_from_generators(G.table, {1: rotation(sp.pi), 4: MIRROR})  # r -> R(2 pi 2/4)
    >>> is_homomorphism(rho, G.table)
    True
    >>> bad = representation_from_generators(G.table, {1: rotation(sp.pi / 2), 4: rotation(sp.pi / 2)})
    >>> is_homomorphism(bad, G.table)                 # m^2 = e is violated
    False
    """
    n = len(table)
    d = next(iter(images.values())).shape[0]
    rho = {0: sp.eye(d)}
    queue = deque([0])
    while queue:
        h = queue.popleft()
        for s, S in images.items():
            g = table[s][h]
            if g not in rho:
                rho[g] = (S * rho[h]).applyfunc(_canonical)
                queue.append(g)
    if len(rho) != n:
        raise ValueError(f"the generators {sorted(images)} reach only {len(rho)} of {n} elements")
    return [rho[g] for g in range(n)]


def _element_order(table, g) -> int:
    k, x = 1, g
    while x != 0:
        x, k = table[x][g], k + 1
    return k


def one_dimensional_characters(group: ExactGroup) -> list:
    r"""All one-dimensional representations (homomorphisms to the nonzero complex numbers).

    The image of each generator must be a root of unity whose order divides the
    generator's order; we try every such assignment, extend it to the whole group
    and keep exactly those that are homomorphisms.  Returns ``[(images, rho)]``
    with ``images = {generator name: value}`` and ``rho`` a list of 1x1 matrices.

    >>> [imgs for imgs, _ in one_dimensional_characters(dihedral_group(4))]
    [{'r': 1, 'm': 1}, {'r': 1, 'm': -1}, {'r': -1, 'm': 1}, {'r': -1, 'm': -1}]
    >>> [imgs['r'] for imgs, _ in one_dimensional_characters(cyclic_group(4))]
    [1, I, -1, -I]
    """
    gens = list(group.generators.items())
    choices = []
    for _, g in gens:
        k = _element_order(group.table, g)
        choices.append([sp.exp(2 * sp.pi * sp.I * j / k) for j in range(k)])
    found = []
    for values in product(*choices):
        rho = representation_from_generators(group.table, {g: sp.Matrix([[v]]) for (_, g), v in zip(gens, values)})
        if is_homomorphism(rho, group.table):
            found.append(({name: v for (name, _), v in zip(gens, values)}, rho))
    return found


def irreps(group: ExactGroup) -> dict:
    r"""The complex irreducible representations of C_N or D_N, constructed and proven complete.

    * one-dimensional: :func:`one_dimensional_characters`.  For D_N they are named
      ``A1`` (trivial), ``A2`` (:math:`r \mapsto 1, m \mapsto -1`), ``B1``
      (:math:`r \mapsto -1, m \mapsto 1`), ``B2`` (both -1); for C_N, ``chi{j}``
      with :math:`r \mapsto e^{2\pi i j/N}`.
    * two-dimensional (D_N only): ``E{j}``, :math:`r \mapsto R(2\pi j/N)`,
      :math:`m \mapsto M`, for :math:`1 \le j < N/2`, extended by
      :func:`representation_from_generators`.

    Each one is checked to be a homomorphism and irreducible
    (:math:`\langle\chi,\chi\rangle = 1`); the list is checked complete by
    :math:`\sum_i d_i^2 = |G|` and (#irreps) = (#conjugacy classes).  The names
    match :meth:`minequi.groups.FiniteGroup.irreps` for D_N.

    >>> {k: v[1] for k, v in irreps(dihedral_group(4)).items()}     # the image of r
    {'A1': Matrix([[1]]), 'A2': Matrix([[1]]), 'B1': Matrix([[-1]]), 'B2': Matrix([[-1]]), 'E1': Matrix([
    [0, -1],
    [1,  0]])}
    """
    dihedral = "m" in group.generators
    N = group.order // 2 if dihedral else group.order
    out = {}
    for images, rho in one_dimensional_characters(group):
        if dihedral:
            name = {(1, 1): "A1", (1, -1): "A2", (-1, 1): "B1", (-1, -1): "B2"}[(images["r"], images["m"])]
        else:
            j = next(j for j in range(N) if _is_zero(images["r"] - sp.exp(2 * sp.pi * sp.I * j / N)))
            name = f"chi{j}"
        out[name] = rho
    if dihedral:
        out = {k: out[k] for k in ("A1", "A2", "B1", "B2") if k in out}
        for j in range(1, (N + 1) // 2):
            out[f"E{j}"] = representation_from_generators(
                group.table, {group.generators["r"]: rotation(2 * sp.pi * j / N), group.generators["m"]: MIRROR}
            )
    for name, rho in out.items():
        if not is_homomorphism(rho, group.table):
            raise AssertionError(f"{name} is not a homomorphism")
        chi = character(rho)
        if inner_product(chi, chi) != 1:
            raise AssertionError(f"{name} is reducible")
    if sum(rho[0].shape[0] ** 2 for rho in out.values()) != group.order:
        raise AssertionError("sum of d_i^2 != |G|: the list of irreps is incomplete")
    if len(out) != len(conjugacy_classes(group.table)):
        raise AssertionError("#irreps != #conjugacy classes")
    return out


# ----------------------------------------------------------------------------- characters
def character(rep) -> list:
    r"""The character :math:`\chi(g) = \operatorname{tr}\rho(g)`, simplified exactly.

    >>> character(dihedral_group(4).matrices)
    [2, 0, -2, 0, 0, 0, 0, 0]
    """
    return [sp.nsimplify(sp.simplify(M.trace())) for M in rep]


def inner_product(chi1, chi2):
    r""":math:`\langle\chi_1,\chi_2\rangle = \frac{1}{|G|}\sum_g \chi_1(g)\overline{\chi_2(g)}`, exactly.

    >>> chi = character(dihedral_group(4).matrices)
    >>> inner_product(chi, chi)
    1
    """
    if len(chi1) != len(chi2):
        raise ValueError(f"characters must have the same length (|G|), got {len(chi1)} and {len(chi2)}")
    total = sum(a * sp.conjugate(b) for a, b in zip(chi1, chi2))
    return sp.nsimplify(sp.simplify(sp.expand(total / len(chi1))))


def character_table(group: ExactGroup, irreps_dict: dict | None = None):
    r"""The character table: ``(rows, classes, table)`` with ``table[i, c]`` = :math:`\chi_i` on class ``c``.

    Computed from the constructed irreps (characters are class functions, so
    one representative per class suffices -- the function checks that the
    character really is constant on each class).

    >>> rows, classes, T = character_table(dihedral_group(4))
    >>> rows
    ['A1', 'A2', 'B1', 'B2', 'E1']
    >>> T
    Matrix([
    [1,  1,  1,  1,  1],
    [1,  1,  1, -1, -1],
    [1, -1,  1,  1, -1],
    [1, -1,  1, -1,  1],
    [2,  0, -2,  0,  0]])
    """
    irreps_dict = irreps(group) if irreps_dict is None else irreps_dict
    classes = conjugacy_classes(group.table)
    rows, entries = [], []
    for name, rho in irreps_dict.items():
        chi = character(rho)
        for c in classes:
            if not all(_is_zero(chi[g] - chi[c[0]]) for g in c):
                raise AssertionError(f"character of {name} is not constant on class {c}")
        rows.append(name)
        entries.append([chi[c[0]] for c in classes])
    return rows, classes, sp.Matrix(entries)


def check_orthogonality(group: ExactGroup, table: sp.Matrix, classes) -> dict:
    r"""Check both orthogonality relations of a character table exactly.

    * rows: :math:`\frac{1}{|G|}\sum_c |c|\, \chi_i(c)\overline{\chi_j(c)} = \delta_{ij}`;
    * columns: :math:`\sum_i \chi_i(c)\overline{\chi_i(c')} = \delta_{cc'}\, |G|/|c|`.

    >>> G = dihedral_group(4)
    >>> rows, classes, T = character_table(G)
    >>> check_orthogonality(G, T, classes)
    {'rows': True, 'columns': True}
    >>> check_orthogonality(G, T.row_insert(0, T[1:2, :]), classes)["rows"]   # a repeated row
    False
    """
    sizes = sp.diag(*[len(c) for c in classes])
    Tc = table.conjugate()
    rows = [_is_zero(x) for x in table * sizes * Tc.T / group.order - sp.eye(table.shape[0])]
    cols = (Tc.T * table - sp.diag(*[sp.Rational(group.order, len(c)) for c in classes]))
    cols_ok = cols.shape == (len(classes), len(classes)) and all(_is_zero(x) for x in cols)
    return {"rows": all(rows), "columns": bool(cols_ok)}


def multiplicities(chi, irreps_dict: dict) -> dict:
    r"""Multiplicity of each irrep in a representation with character ``chi``: :math:`\langle\chi,\chi_i\rangle`.

    They are exact integers (a non-integer would mean ``chi`` is not a character).

    >>> G = dihedral_group(4)
    >>> multiplicities(character(regular_representation(G.table)), irreps(G))
    {'A1': 1, 'A2': 1, 'B1': 1, 'B2': 1, 'E1': 2}
    """
    out = {}
    for name, rho in irreps_dict.items():
        m = inner_product(chi, character(rho))
        if not (m.is_integer and m >= 0):
            raise ValueError(f"multiplicity of {name} is {m}, not a non-negative integer: not a character")
        out[name] = int(m)
    return out


def kron(A: sp.Matrix, B: sp.Matrix) -> sp.Matrix:
    r"""The Kronecker product :math:`A \otimes B` (row-major: index ``(i, k) -> i * dim(B) + k``).

    >>> kron(sp.Matrix([[1, 2]]), sp.Matrix([[0, 1], [1, 0]]))
    Matrix([
    [0, 1, 0, 2],
    [1, 0, 2, 0]])
    """
    ra, ca = A.shape
    rb, cb = B.shape
    return sp.Matrix(ra * rb, ca * cb, lambda i, j: A[i // rb, j // cb] * B[i % rb, j % cb])


# ----------------------------------------------------------------------------- Schur's lemma
def intertwiners(rho1, rho2) -> list:
    r"""A basis of :math:`\mathrm{Hom}_G(\rho_1, \rho_2) = \{A : \rho_2(g) A = A \rho_1(g)\ \forall g\}`.

    With the row-major vectorisation, :math:`\mathrm{vec}(\rho_2 A) = (\rho_2 \otimes I)\,\mathrm{vec} A`
    and :math:`\mathrm{vec}(A \rho_1) = (I \otimes \rho_1^\top)\,\mathrm{vec} A`, so the
    intertwiners are the exact null space of the stacked matrices
    :math:`\rho_2(g) \otimes I - I \otimes \rho_1(g)^\top`.  Schur's lemma: for
    irreducible :math:`\rho_1, \rho_2` (over C) the space is 1-dimensional if they
    are equivalent and 0 otherwise.

    Returns a list of ``d2 x d1`` matrices.

    >>> E = irreps(dihedral_group(4))["E1"]
    >>> intertwiners(E, E)                    # only multiples of the identity
    [Matrix([
    [1, 0],
    [0, 1]])]
    >>> intertwiners(E, irreps(dihedral_group(4))["A1"])
    []
    """
    if len(rho1) != len(rho2):
        raise ValueError(f"rho1 and rho2 must be representations of the same group, got {len(rho1)} and {len(rho2)} matrices")
    d1, d2 = rho1[0].shape[0], rho2[0].shape[0]
    blocks = [kron(R2, sp.eye(d1)) - kron(sp.eye(d2), R1.T) for R1, R2 in zip(rho1, rho2)]
    system = sp.Matrix.vstack(*blocks)  # [|G| d2 d1, d2 d1]
    return [sp.Matrix(d2, d1, list(v)) for v in system.nullspace(simplify=True)]
