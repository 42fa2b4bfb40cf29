"""Tests of minequi.symbolic.finite (exact) and of minequi.groups against it (symbolic equals numeric)."""
import pytest
import sympy as sp
import torch

from minequi import groups
from minequi.symbolic import finite as F
from minequi.testing import assert_equivariant, equivariance_error

NS = (1, 2, 3, 4, 6)


@pytest.fixture(scope="module")
def exact():
    """Exact groups and irreps, built once (building is the slow, sympy part)."""
    out = {}
    for N in NS:
        for G in (F.cyclic_group(N), F.dihedral_group(N)):
            out[G.name] = (G, F.irreps(G))
    return out


def as_torch(mats):
    return torch.tensor([[[complex(sp.N(x, 30)) for x in M.row(i)] for i in range(M.rows)] for M in mats],
                        dtype=torch.complex128)


def element_sampler(n):
    def sample(generator=None, dtype=None):
        return int(torch.randint(0, n, (), generator=generator))

    return sample


# ----------------------------------------------------------------------------- the groups
@pytest.mark.parametrize("name", [f"{k}{N}" for N in NS for k in "CD"])
def test_symbolic_equals_numeric(exact, name):
    G, irr = exact[name]
    num = (groups.cyclic_group if name[0] == "C" else groups.dihedral_group)(int(name[1:]))
    assert G.names == num.names
    assert torch.equal(torch.tensor(G.table), num.table)
    assert torch.equal(torch.tensor(G.inverse), num.inverse)
    assert (as_torch(G.matrices).real - num.matrices).abs().max() < 1e-15
    assert torch.equal(as_torch(F.regular_representation(G.table)).real, num.regular_representation())
    assert [list(c) for c in num.conjugacy_classes()] == F.conjugacy_classes(G.table)
    num_irr = num.irreps()
    if name[0] == "D":  # the same irreps, same names, same matrices
        assert list(irr) == list(num_irr)
        for k in irr:
            assert (as_torch(irr[k]).real - num_irr[k]).abs().max() < 1e-15, k
    else:  # numeric real E_j = exact complex chi_j + chi_{N-j}; A = chi0; B = chi_{N/2}
        N = int(name[1:])
        chi = {k: torch.tensor([complex(sp.N(x, 30)) for x in F.character(v)]) for k, v in irr.items()}
        for k, rep in num_irr.items():
            expected = {"A": chi["chi0"], "B": chi.get(f"chi{N // 2}")}.get(k)
            if k.startswith("E"):
                j = int(k[1:])
                expected = chi[f"chi{j}"] + chi[f"chi{N - j}"]
            assert (num.character(rep) - expected.real).abs().max() < 1e-14, k
            assert expected.imag.abs().max() < 1e-14


@pytest.mark.parametrize("name", [f"{k}{N}" for N in NS for k in "CD"])
def test_axioms_and_homomorphisms(exact, name):
    G, irr = exact[name]
    assert F.check_group_axioms(G.table) == {"closure": True, "associativity": True, "identity": True, "inverses": True}
    assert F.is_homomorphism(G.matrices, G.table)
    assert F.is_homomorphism(F.regular_representation(G.table), G.table)
    for rho in irr.values():
        assert F.is_homomorphism(rho, G.table)


def test_axioms_negative_controls():
    T = [list(r) for r in F.dihedral_group(4).table]
    T[1][4], T[4][1] = T[4][1], T[1][4]  # pretend r m = m r: the table of a different (wrong) "group"
    assert F.check_group_axioms(T)["associativity"] is False
    T2 = [list(r) for r in F.cyclic_group(3).table]
    T2[0][1] = 0  # identity broken
    assert F.check_group_axioms(T2)["identity"] is False
    assert F.check_group_axioms([[0, 5], [1, 0]])["closure"] is False


def test_homomorphism_negative_controls():
    G = F.dihedral_group(4)
    assert not F.is_homomorphism([M.T for M in G.matrices], G.table)  # anti-homomorphism
    # generator images that break the relation m r m = r^-1: r -> R(pi/2), m -> identity
    rho = F.representation_from_generators(G.table, {1: F.rotation(sp.pi / 2), 4: sp.eye(2)})
    assert not F.is_homomorphism(rho, G.table)
    # exact 1-dim "characters" of D4 are only the four sign patterns: r -> i is not one
    rho_i = F.representation_from_generators(G.table, {1: sp.Matrix([[sp.I]]), 4: sp.Matrix([[1]])})
    assert not F.is_homomorphism(rho_i, G.table)


# ----------------------------------------------------------------------------- characters
def test_character_table_d4(exact):
    G, irr = exact["D4"]
    rows, classes, T = F.character_table(G, irr)
    assert [[G.names[i] for i in c] for c in classes] == [["e"], ["r", "r^3"], ["r^2"], ["m", "r^2 m"], ["r m", "r^3 m"]]
    # the textbook D4 table (an independent check of the computed one)
    assert T == sp.Matrix([[1, 1, 1, 1, 1], [1, 1, 1, -1, -1], [1, -1, 1, 1, -1], [1, -1, 1, -1, 1], [2, 0, -2, 0, 0]])
    assert F.check_orthogonality(G, T, classes) == {"rows": True, "columns": True}


@pytest.mark.parametrize("name", ["C3", "C4", "C6", "D3", "D6"])
def test_orthogonality(exact, name):
    G, irr = exact[name]
    rows, classes, T = F.character_table(G, irr)
    assert T.shape == (len(classes), len(classes))
    assert F.check_orthogonality(G, T, classes) == {"rows": True, "columns": True}


def test_c4_complex_characters(exact):
    G, irr = exact["C4"]
    _, _, T = F.character_table(G, irr)
    assert T == sp.Matrix(4, 4, lambda j, k: sp.I ** (j * k))


def test_orthogonality_negative_control(exact):
    G, irr = exact["D4"]
    _, classes, T = F.character_table(G, irr)
    T2 = T.copy()
    T2[4, 1] = 1  # corrupt one entry of E1
    assert F.check_orthogonality(G, T2, classes) == {"rows": False, "columns": False}


# ----------------------------------------------------------------------------- decompositions
@pytest.mark.parametrize("name", [f"{k}{N}" for N in NS for k in "CD"])
def test_regular_contains_each_irrep_dim_times(exact, name):
    G, irr = exact[name]
    m = F.multiplicities(F.character(F.regular_representation(G.table)), irr)
    assert m == {k: v[0].shape[0] for k, v in irr.items()}
    assert all(isinstance(v, int) for v in m.values())


def test_tensor_products(exact):
    G, irr = exact["D4"]
    EE = [F.kron(A, A) for A in irr["E1"]]
    assert F.is_homomorphism(EE, G.table)
    assert F.multiplicities(F.character(EE), irr) == {"A1": 1, "A2": 1, "B1": 1, "B2": 1, "E1": 0}
    G3, irr3 = exact["D3"]
    EE3 = [F.kron(A, A) for A in irr3["E1"]]
    assert F.multiplicities(F.character(EE3), irr3) == {"A1": 1, "A2": 1, "E1": 1}
    # numeric agrees
    num = groups.dihedral_group(4)
    assert num.decompose(as_torch(EE).real) == {"A1": 1, "A2": 1, "B1": 1, "B2": 1, "E1": 0}


def test_multiplicities_negative_control(exact):
    G, irr = exact["D4"]
    chi = F.character(irr["E1"])
    with pytest.raises(ValueError, match="not a non-negative integer"):
        F.multiplicities([x / 2 for x in chi], irr)


# ----------------------------------------------------------------------------- Schur's lemma
def test_schur(exact):
    G, irr = exact["D4"]
    E, A1, A2 = irr["E1"], irr["A1"], irr["A2"]
    assert len(F.intertwiners(E, E)) == 1
    assert F.intertwiners(E, E)[0] == sp.eye(2)
    assert F.intertwiners(E, A1) == [] and F.intertwiners(A1, E) == [] and F.intertwiners(A1, A2) == []
    EE = [sp.diag(M, M) for M in E]
    basis = F.intertwiners(EE, EE)
    assert len(basis) == 4  # 2x2 blocks of multiples of the identity: GL(2) commutant
    # the real 2-dim rotation rep of C4 is irreducible over R but not over C: its commutant is C (2-dim)
    C4 = F.cyclic_group(4)
    R = [F.rotation(sp.pi * k / 2) for k in range(4)]
    assert len(F.intertwiners(R, R)) == 2
    # the intertwiners really commute with the group action (shared checker, all elements sampled)
    A = sum((c * B for c, B in zip([3, -1, 2, 5], basis)), sp.zeros(4, 4))
    A_t = as_torch([A]).real[0]
    rho = as_torch(EE).real
    x = torch.randn(5, 4, dtype=torch.float64)
    act = lambda g, x: x @ rho[g].T
    assert_equivariant(lambda x: x @ A_t.T, x, element_sampler(8), act, act, n_samples=16, atol=1e-12)
    # negative control: a generic matrix is not an intertwiner
    B_t = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert equivariance_error(lambda x: x @ B_t.T, x, element_sampler(8), act, act, n_samples=16) > 1e-2


# ----------------------------------------------------------------------------- bad input
def test_bad_input():
    for bad in (0, -1):
        with pytest.raises(ValueError, match="N must be a positive int"):
            F.dihedral_group(bad)
    for bad in (2.5, True, "3"):
        with pytest.raises(TypeError, match="N must be a positive int"):
            F.cyclic_group(bad)
    with pytest.raises(ValueError, match="not closed"):
        F.multiplication_table([sp.eye(2), F.rotation(sp.pi / 2)])
    G = F.cyclic_group(4)
    with pytest.raises(ValueError, match="one matrix per group element"):
        F.is_homomorphism(G.matrices[:3], G.table)
    with pytest.raises(ValueError, match="same length"):
        F.inner_product([1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="reach only"):
        F.representation_from_generators(F.dihedral_group(4).table, {1: F.rotation(sp.pi / 2)})
