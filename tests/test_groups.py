"""Tests of minequi.groups: C_N and D_N, their tables, representations and characters."""
import math

import pytest
import torch

from minequi.groups import FiniteGroup, cyclic_group, dihedral_group
from minequi.testing import assert_equivariant, equivariance_error

GROUPS = [cyclic_group(N) for N in (1, 2, 3, 4, 5, 6, 8)] + [dihedral_group(N) for N in (1, 2, 3, 4, 5, 6, 8)]
IDS = [G.name for G in GROUPS]


def element_sampler(G):
    """Sampler (for minequi.testing) of a uniformly random element index of G."""

    def sample(generator=None, dtype=None):
        return int(torch.randint(0, G.order, (), generator=generator))

    return sample


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("G", GROUPS, ids=IDS)
def test_group_axioms(G):
    n, T = G.order, G.table
    assert T.dtype == torch.int64 and T.shape == (n, n)
    # closure + Latin square: every row and column is a permutation
    for a in range(n):
        assert sorted(T[a].tolist()) == list(range(n))
        assert sorted(T[:, a].tolist()) == list(range(n))
    # identity
    assert torch.equal(T[0], torch.arange(n)) and torch.equal(T[:, 0], torch.arange(n))
    # inverses
    assert torch.equal(T[torch.arange(n), G.inverse], torch.zeros(n, dtype=torch.int64))
    assert torch.equal(T[G.inverse, torch.arange(n)], torch.zeros(n, dtype=torch.int64))
    # associativity (a b) c = a (b c), all triples
    lhs = T[T]  # [a, b, c] -> (a b) c
    rhs = T[torch.arange(n)[:, None, None], T[None, :, :]]  # [a, b, c] -> a (b c)
    assert torch.equal(lhs, rhs)


@pytest.mark.parametrize("G", GROUPS, ids=IDS)
def test_table_matches_matrices(G):
    prod = torch.einsum("aij,bjk->abik", G.matrices, G.matrices)
    assert (prod - G.matrices[G.table]).abs().max() < 1e-12
    assert G.homomorphism_error(G.matrices) < 1e-12
    # orthogonal matrices; rotations have det +1, mirrors det -1
    eye = torch.eye(2, dtype=torch.float64)
    assert (G.matrices @ G.matrices.transpose(1, 2) - eye).abs().max() < 1e-12


def test_convention_elements():
    """Element k + N s is R(2 pi k / N) M^s: r is counter-clockwise, m = (x, y) -> (x, -y)."""
    G = dihedral_group(4)
    x = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert torch.equal(G.matrices[1] @ x, torch.tensor([0.0, 1.0], dtype=torch.float64))  # r: x-axis -> y-axis
    assert torch.equal(G.matrices[4], torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
    assert torch.equal(G.matrices[5], G.matrices[1] @ G.matrices[4])  # "r m" = r @ m
    assert G.names == ("e", "r", "r^2", "r^3", "m", "r m", "r^2 m", "r^3 m")
    assert torch.equal(dihedral_group(4).matrices[:4], cyclic_group(4).matrices)
    # the table of D_N in closed form: r^a m^s r^b m^t = r^(a + (-1)^s b) m^(s + t)
    for N in (3, 4, 6):
        D = dihedral_group(N)
        for g in range(2 * N):
            for h in range(2 * N):
                (a, s), (b, t) = divmod(g, N)[::-1], divmod(h, N)[::-1]
                assert int(D.table[g, h]) == (a + (-1) ** s * b) % N + N * ((s + t) % 2)
        C = cyclic_group(N)
        assert torch.equal(C.table, (torch.arange(N)[:, None] + torch.arange(N)[None, :]) % N)
    # C_4 and D_4 matrices are exact integers (no 6e-17 from cos(pi/2))
    assert torch.equal(G.matrices, G.matrices.round())


def test_conjugacy_classes():
    names = lambda G: [[G.names[i] for i in c] for c in G.conjugacy_classes()]
    assert names(dihedral_group(4)) == [["e"], ["r", "r^3"], ["r^2"], ["m", "r^2 m"], ["r m", "r^3 m"]]
    assert names(dihedral_group(3)) == [["e"], ["r", "r^2"], ["m", "r m", "r^2 m"]]
    assert len(cyclic_group(6).conjugacy_classes()) == 6  # abelian
    for G in GROUPS:  # the classes partition G, and are unions of g x g^-1
        cls = G.conjugacy_classes()
        assert sorted(i for c in cls for i in c) == list(range(G.order))


# ----------------------------------------------------------------------------- representations
@pytest.mark.parametrize("G", GROUPS, ids=IDS)
def test_regular_representation(G):
    rho = G.regular_representation()
    n = G.order
    assert rho.shape == (n, n, n) and rho.dtype == torch.float64
    assert G.homomorphism_error(rho) == 0.0
    # permutation matrices with rho(g) e_h = e_{gh}
    assert torch.equal(rho.sum(1), torch.ones(n, n, dtype=torch.float64))
    for g in range(n):
        for h in range(n):
            assert rho[g, G.table[g, h], h] == 1.0
    # character: |G| at the identity, 0 elsewhere
    chi = G.character(rho)
    assert chi[0] == n and (chi[1:] == 0).all()


def test_regular_representation_is_left_translation():
    """rho(g) f = f(g^-1 .): measured with the shared checker, over random elements of D_4."""
    G = dihedral_group(4)
    rho = G.regular_representation()
    f = torch.randn(3, G.order, dtype=torch.float64)  # three functions on the group, [B, |G|]
    # right convolution with a fixed kernel k, (f * k)(x) = sum_y f(x y) k(y), commutes with left
    # translation: (L_g f)(x y) = f(g^-1 x y), so (L_g f) * k = L_g (f * k)
    k = torch.randn(G.order, dtype=torch.float64)
    right_conv = lambda f: torch.stack([(f[:, G.table[x]] * k).sum(-1) for x in range(G.order)], -1)
    translate = lambda g, f: f[:, G.table[G.inverse[g]]]  # (L_g f)(x) = f(g^-1 x)
    act = lambda g, f: f @ rho[g].T  # features act as f @ D.T
    # the regular representation is left translation ...
    for g in range(G.order):
        assert torch.equal(act(g, f), translate(g, f))
    # ... and right convolution is equivariant to it
    assert_equivariant(right_conv, f, element_sampler(G), act, act, n_samples=16, atol=1e-12)
    # negative control: LEFT convolution sum_y f(y x) k(y) is not equivariant to left translation
    left_conv = lambda f: torch.stack([(f[:, G.table[:, x]] * k).sum(-1) for x in range(G.order)], -1)
    assert equivariance_error(left_conv, f, element_sampler(G), act, act, n_samples=16) > 1e-3


@pytest.mark.parametrize("G", GROUPS, ids=IDS)
def test_irreps_and_characters(G):
    irreps = G.irreps()
    assert sum(v.shape[1] ** 2 for v in irreps.values()) == (
        G.order if G.name.startswith("D") else G.order + 2 * sum(v.shape[1] == 2 for v in irreps.values())
    )
    chars = {k: G.character(v) for k, v in irreps.items()}
    for a, rep in irreps.items():
        assert G.homomorphism_error(rep) < 1e-12, a
        # characters are class functions
        for c in G.conjugacy_classes():
            assert (chars[a][list(c)] - chars[a][c[0]]).abs().max() < 1e-12
        for b in irreps:
            ip = float(G.inner_product(chars[a], chars[b]))
            expected = 0.0 if a != b else (2.0 if G.name.startswith("C") and rep.shape[1] == 2 else 1.0)
            assert abs(ip - expected) < 1e-12, (a, b, ip)
    if G.name.startswith("D"):  # as many irreps as conjugacy classes (absolutely irreducible)
        assert len(irreps) == len(G.conjugacy_classes())


@pytest.mark.parametrize("G", GROUPS, ids=IDS)
def test_decompose_regular(G):
    dec = G.decompose(G.regular_representation())
    for name, rep in G.irreps().items():
        d = rep.shape[1]
        # D_N: each irrep d_i times; C_N: the real 2-dim irreps are two complex characters, once each
        assert dec[name] == (d if G.name.startswith("D") else 1), (name, dec)


def test_decompose_tensor_product_d4():
    G = dihedral_group(4)
    E = G.irreps()["E1"]
    EE = torch.einsum("gij,gkl->gikjl", E, E).reshape(8, 4, 4)  # Kronecker product per element
    assert G.homomorphism_error(EE) < 1e-12
    assert G.decompose(EE) == {"A1": 1, "A2": 1, "B1": 1, "B2": 1, "E1": 0}


def test_cyclic_complex_characters():
    """C_N's complex irreps chi_j(k) = exp(2 pi i jk/N) are orthonormal under inner_product."""
    N = 5
    G = cyclic_group(N)
    k = torch.arange(N, dtype=torch.float64)
    chis = [torch.exp(2j * math.pi * j * k / N) for j in range(N)]
    gram = torch.stack([torch.stack([G.inner_product(a, b) for b in chis]) for a in chis])
    assert (gram - torch.eye(N, dtype=gram.dtype)).abs().max() < 1e-12
    # the real E_j character is chi_j + chi_{-j}
    assert (G.character(G.irreps()["E2"]) - (chis[2] + chis[N - 2]).real).abs().max() < 1e-12


# ----------------------------------------------------------------------------- negative controls & bad input
def test_negative_controls():
    G = dihedral_group(4)
    # a non-homomorphism is detected: swap the matrices of r and r^3
    bad = G.matrices.clone()
    bad[[1, 3]] = bad[[3, 1]]
    assert G.homomorphism_error(bad) > 0.5
    # a wrongly ordered table is detected by the matrices check
    wrong = G.table.clone()
    wrong[1, 4], wrong[4, 1] = wrong[4, 1].clone(), wrong[1, 4].clone()  # pretend r m = m r
    prod = torch.einsum("aij,bjk->abik", G.matrices, G.matrices)
    assert (prod - G.matrices[wrong]).abs().max() > 0.5
    # a non-representation makes decompose fail with a clear message
    with pytest.raises(ValueError, match="not a representation of D4"):
        G.decompose(2.0 * G.irreps()["E1"])
    # a complex representation of C_4 (a single character e^{i pi k/2}) is refused
    C = cyclic_group(4)
    chi1 = torch.exp(0.5j * math.pi * torch.arange(4, dtype=torch.float64)).reshape(4, 1, 1)
    assert C.homomorphism_error(chi1) < 1e-12
    with pytest.raises(ValueError, match="real representation"):
        C.decompose(chi1)


def test_bad_input():
    for bad in (0, -3):
        with pytest.raises(ValueError, match="N must be a positive int"):
            cyclic_group(bad)
        with pytest.raises(ValueError, match="N must be a positive int"):
            dihedral_group(bad)
    for bad in (2.0, "4", True, None):
        with pytest.raises(TypeError, match="N must be a positive int"):
            dihedral_group(bad)
    G = dihedral_group(4)
    with pytest.raises(ValueError, match=r"shape \[\|G\|=8, d, d\]"):
        G.character(torch.zeros(4, 2, 2))
    with pytest.raises(ValueError, match="chi1"):
        G.inner_product(torch.zeros(3), torch.zeros(8))
    # matrices that are not closed under products
    M = torch.stack([torch.eye(2, dtype=torch.float64), G.matrices[1]])
    with pytest.raises(ValueError, match="not closed"):
        FiniteGroup.from_matrices("X", ("e", "r"), M)
    with pytest.raises(ValueError, match="identity"):
        FiniteGroup.from_matrices("X", ("a", "b"), G.matrices[[2, 0]])
    with pytest.raises(ValueError, match="irreps are known only"):
        FiniteGroup.from_matrices("X", ("e", "r^2"), G.matrices[[0, 2]]).irreps()


def test_frozen():
    """A FiniteGroup is immutable: assigning a field raises dataclasses.FrozenInstanceError (an
    AttributeError), not just any exception, and leaves the group unchanged."""
    import dataclasses

    G = cyclic_group(4)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'name'"):
        G.name = "C5"
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'table'"):
        G.table = G.table.T
    assert G.name == "C4" and torch.equal(G.table, cyclic_group(4).table)
