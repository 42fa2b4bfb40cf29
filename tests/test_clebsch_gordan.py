"""Tests of minequi.clebsch_gordan: equivariance, orthonormality, sign convention, known tensors."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minequi.clebsch_gordan import clebsch_gordan
from minequi.irreps import Irrep
from minequi.so3 import wigner_D
from minequi.testing import assert_equivariant, equivariance_error, haar_o3, rand_rotation

TRIPLES = [(l1, l2, l3) for l1 in range(5) for l2 in range(5) for l3 in range(abs(l1 - l2), l1 + l2 + 1)]


def cg_equivariance_error(C, l1, l2, l3, n=8, seed=0):
    """max |(D1 x D2) C - C D3| over n Haar rotations."""
    R = rand_rotation(n, generator=torch.Generator().manual_seed(seed))
    D1, D2, D3 = wigner_D(l1, R), wigner_D(l2, R), wigner_D(l3, R)
    lhs = torch.einsum("nia,njb,abk->nijk", D1, D2, C)
    rhs = torch.einsum("ijc,nck->nijk", C, D3)
    return float((lhs - rhs).abs().max())


def orthonormality_error(C):
    M = C.reshape(-1, C.shape[-1])
    return float((M.T @ M - torch.eye(C.shape[-1], dtype=C.dtype)).abs().max())


@pytest.mark.parametrize("l1,l2,l3", TRIPLES)
def test_equivariant_orthonormal_signed(l1, l2, l3):
    C = clebsch_gordan(l1, l2, l3)
    assert C.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1) and C.dtype == torch.float64
    assert cg_equivariance_error(C, l1, l2, l3) < 1e-13
    assert orthonormality_error(C) < 1e-13
    flat = C.reshape(-1)
    first = flat[flat.abs() > 1e-9][0]
    assert first > 0


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 8), st.integers(0, 8), st.data())
def test_random_triples_up_to_8(l1, l2, data):
    l3 = data.draw(st.integers(abs(l1 - l2), l1 + l2))
    C = clebsch_gordan(l1, l2, l3)
    assert cg_equivariance_error(C, l1, l2, l3, n=3) < 1e-12
    assert orthonormality_error(C) < 1e-12


def test_large_triple():
    C = clebsch_gordan(8, 8, 16)
    assert cg_equivariance_error(C, 8, 8, 16, n=3) < 1e-12
    assert orthonormality_error(C) < 1e-12


@pytest.mark.parametrize("p1,p2", [(1, 1), (1, -1), (-1, 1), (-1, -1)])
def test_o3_equivariance_with_parity(p1, p2):
    """(u, v) -> einsum(u, v, C) maps (l1,p1) x (l2,p2) to (l3, p1 p2), reflections included."""
    l1, l2, l3 = 2, 3, 2
    C = clebsch_gordan(l1, l2, l3)
    ir1, ir2, ir3 = Irrep(l1, p1), Irrep(l2, p2), Irrep(l3, p1 * p2)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(10, 5, dtype=torch.float64, generator=gen)
    v = torch.randn(10, 7, dtype=torch.float64, generator=gen)
    assert_equivariant(
        lambda u, v: torch.einsum("ni,nj,ijk->nk", u, v, C), (u, v), haar_o3,
        act_in=lambda Q, uv: (uv[0] @ ir1.D_from_matrix(Q).T, uv[1] @ ir2.D_from_matrix(Q).T),
        act_out=lambda Q, y: y @ ir3.D_from_matrix(Q).T, n_samples=12, atol=1e-13,
    )
    # negative control: the wrong output parity is caught under reflections
    wrong = Irrep(l3, -p1 * p2)
    err = equivariance_error(
        lambda u, v: torch.einsum("ni,nj,ijk->nk", u, v, C), (u, v), haar_o3,
        act_in=lambda Q, uv: (uv[0] @ ir1.D_from_matrix(Q).T, uv[1] @ ir2.D_from_matrix(Q).T),
        act_out=lambda Q, y: y @ wrong.D_from_matrix(Q).T, n_samples=12,
    )
    assert err > 0.1


def test_negative_control_permuted_m_axis_fails():
    for l1, l2, l3 in [(1, 1, 2), (2, 2, 2), (3, 1, 3)]:
        C = clebsch_gordan(l1, l2, l3)
        perm = torch.arange(2 * l1 + 1).roll(1)
        err = cg_equivariance_error(C[perm], l1, l2, l3)
        assert err > 0.1, (l1, l2, l3, err)
        assert orthonormality_error(C[perm]) < 1e-13  # still orthonormal: only equivariance catches it


def test_known_tensors():
    # l x 0 -> l and 0 x l -> l: the identity
    for l in range(5):
        eye = torch.eye(2 * l + 1, dtype=torch.float64)
        assert (clebsch_gordan(l, 0, l)[:, 0, :] - eye).abs().max() < 1e-14
        assert (clebsch_gordan(0, l, l)[0] - eye).abs().max() < 1e-14
        # l x l -> 0: the invariant dot product u.v / sqrt(2l+1)
        assert (clebsch_gordan(l, l, 0)[:, :, 0] - eye / math.sqrt(2 * l + 1)).abs().max() < 1e-14
    # 1 x 1 -> 1: the cross product / sqrt 2
    eps = torch.zeros(3, 3, 3, dtype=torch.float64)
    eps[0, 1, 2] = eps[1, 2, 0] = eps[2, 0, 1] = 1
    eps[0, 2, 1] = eps[2, 1, 0] = eps[1, 0, 2] = -1
    assert (clebsch_gordan(1, 1, 1) - eps / math.sqrt(2)).abs().max() < 1e-14
    # 1 x 1 -> 2 is symmetric and traceless in (i, j)
    C = clebsch_gordan(1, 1, 2)
    assert (C - C.transpose(0, 1)).abs().max() < 1e-14
    assert torch.einsum("iik->k", C).abs().max() < 1e-14


@pytest.mark.parametrize("l1,l2,l3", [(1, 2, 2), (2, 2, 3), (1, 3, 3), (2, 3, 4), (2, 2, 4)])
def test_swap_symmetry(l1, l2, l3):
    """Swapping the inputs gives an intertwiner too, so C(l2,l1,l3) = +-C(l1,l2,l3) with the first two axes swapped."""
    C12, C21 = clebsch_gordan(l1, l2, l3), clebsch_gordan(l2, l1, l3).transpose(0, 1)
    assert min((C12 - C21).abs().max(), (C12 + C21).abs().max()) < 1e-13


def test_cache_cannot_be_corrupted():
    C = clebsch_gordan(2, 2, 2)
    C.zero_()
    assert clebsch_gordan(2, 2, 2).abs().max() > 0.1


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"clebsch_gordan\(1, 1, 3\) violates the triangle rule \|l1 - l2\| <= l3 <= l1 \+ l2"):
        clebsch_gordan(1, 1, 3)
    with pytest.raises(ValueError, match=r"triangle rule"):
        clebsch_gordan(4, 1, 2)
    with pytest.raises(ValueError, match=r"l2 must be a non-negative int, got -1"):
        clebsch_gordan(1, -1, 1)
    with pytest.raises(TypeError, match=r"l3 must be a non-negative int, got 1\.0"):
        clebsch_gordan(1, 1, 1.0)
    with pytest.raises(TypeError, match=r"l1 must be a non-negative int, got True"):
        clebsch_gordan(True, 1, 1)
