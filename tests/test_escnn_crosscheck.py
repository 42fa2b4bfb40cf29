r"""Cross-check of minequi's SO(3) irreps and Clebsch-Gordan tensors against escnn.

Findings (all checked below):

* An escnn ``SO3`` element stores a unit quaternion (scipy's ``(x, y, z, w)``
  order); ``g.to("MAT")`` is its rotation matrix ``R`` (scipy's active
  convention, the same as minequi's: ``element(R1) @ element(R2)`` has matrix
  ``R1 @ R2``), and ``so3.element(R, "MAT")`` builds the element back.
* escnn's ``irrep(1)(g)`` is **not** ``R``: it is ``P.T @ R @ P`` with the cyclic
  permutation ``P = [[0,0,1],[1,0,0],[0,1,0]]`` (escnn's ``standard_representation``
  undoes exactly this ``P``).  escnn's l = 1 basis is ``(y, z, x)``: textbook real
  harmonics with polar axis *z*, while minequi's polar axis is *y* so that
  :math:`D^1(R) = R`.
* More generally, for every l the orthogonal intertwiner :math:`Q_l` with
  :math:`\rho^\text{escnn}_l(g) = Q_l\, D^l(R)\, Q_l^\top`, found here from
  random samples by an SVD null space, equals :math:`\pm D^l(P^\top)`, i.e.
  :math:`\rho^\text{escnn}_l(g) = D^l(P^\top R P)`: escnn and minequi share the
  same real basis up to the relabelling of the axes, with no extra signs.
* escnn's Clebsch-Gordan tensors (``so3._clebsh_gordan_coeff(l1, l2, l3)``, shape
  ``[2l1+1, 2l2+1, 1, 2l3+1]``) have orthonormal columns like minequi's, and
  equal :math:`s\, (Q_{l_1} \otimes Q_{l_2})\, C\, Q_{l_3}^\top` with a sign
  :math:`s = \pm 1` that depends on (l1, l2, l3) (a different sign convention).
"""
import itertools
import warnings

import numpy as np
import pytest
import torch

escnn_group = pytest.importorskip("escnn.group")

from minequi.clebsch_gordan import clebsch_gordan  # noqa: E402
from minequi.so3 import wigner_D  # noqa: E402
from minequi.testing import rand_rotation  # noqa: E402

L_MAX = 6
P = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def G():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return escnn_group.so3_group(L_MAX)


def haar(n, seed):
    """Haar-random rotations as float64 numpy matrices [n, 3, 3]."""
    return rand_rotation(n, generator=torch.Generator().manual_seed(seed)).numpy()


def escnn_irrep(G, l, R):
    return np.asarray(G.irrep(l)(G.element(R, "MAT")), dtype=np.float64)


def minequi_D(l, R):
    return wigner_D(l, torch.as_tensor(R)).numpy()


def intertwiner(G, l, n_samples=4, seed=1):
    r"""The orthogonal :math:`Q` with :math:`\rho^\text{escnn}_l(g) Q = Q D^l(R)` on ``n_samples`` Haar samples.

    Stacks :math:`(A \otimes I - I \otimes B^\top)\, \mathrm{vec}(Q) = 0` for each sample, with ``vec``
    reading ``Q`` row by row (the book's convention, ``book/conventions.md``),
    and takes the right singular vector of the smallest singular value; returns ``Q`` scaled to
    :math:`Q^\top Q = I` and the two smallest singular values (to check the null space is one-dimensional).
    """
    d = 2 * l + 1
    rows = []
    for R in haar(n_samples, seed):
        A, B = escnn_irrep(G, l, R), minequi_D(l, R)
        rows.append(np.kron(A, np.eye(d)) - np.kron(np.eye(d), B.T))  # vec(A Q - Q B), row-major
    _, s, vt = np.linalg.svd(np.concatenate(rows))
    Q = vt[-1].reshape(d, d)  # row-major, like the vec above
    Q = Q / np.sqrt((Q.T @ Q)[0, 0])
    idx = np.argmax(np.abs(Q).reshape(-1))  # fix the sign: the largest entry is positive
    Q = Q * np.sign(Q.reshape(-1)[idx])
    return Q, s[-1], s[-2] if len(s) > 1 else np.inf


def test_element_mapping(G):
    """element(R, 'MAT') round-trips, composes like matrices, and irrep(1) is R in the basis (y, z, x)."""
    R1, R2 = haar(2, seed=0)
    g1, g2 = G.element(R1, "MAT"), G.element(R2, "MAT")
    assert np.abs(g1.to("MAT") - R1).max() < 1e-12
    assert np.abs((g1 @ g2).to("MAT") - R1 @ R2).max() < 1e-12
    for R in haar(10, seed=2):
        assert np.abs(escnn_irrep(G, 1, R) - P.T @ R @ P).max() < 1e-12
        assert np.abs(G.standard_representation()(G.element(R, "MAT")) - R).max() < 1e-12


@pytest.mark.parametrize("l", range(L_MAX + 1))
def test_characters_agree(G, l):
    for R in haar(20, seed=3):
        t_escnn = np.trace(escnn_irrep(G, l, R))
        t_minequi = np.trace(minequi_D(l, R))
        angle = np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))
        t_formula = np.sin((l + 0.5) * angle) / np.sin(angle / 2)
        assert abs(t_escnn - t_minequi) < 1e-10
        assert abs(t_minequi - t_formula) < 1e-9


@pytest.mark.parametrize("l", range(L_MAX + 1))
def test_irreps_agree_up_to_change_of_basis(G, l):
    Q, s_min, s_next = intertwiner(G, l)
    assert s_min < 1e-10 and s_next > 1e-3  # a one-dimensional space of intertwiners (Schur)
    assert np.abs(Q.T @ Q - np.eye(2 * l + 1)).max() < 1e-10
    for R in haar(10, seed=4):  # fresh samples
        assert np.abs(escnn_irrep(G, l, R) - Q @ minequi_D(l, R) @ Q.T).max() < 1e-10
    # the closed form: Q_l = +- D^l(P^T), i.e. escnn's irrep l at R is minequi's D^l(P^T R P)
    closed = minequi_D(l, P.T)
    assert min(np.abs(Q - closed).max(), np.abs(Q + closed).max()) < 1e-10


def test_negative_control_wrong_change_of_basis_is_caught(G):
    """Using D^l(P) instead of D^l(P^T) (or no change of basis) does not match escnn."""
    R = haar(1, seed=5)[0]
    for l in (1, 2, 3):
        A = escnn_irrep(G, l, R)
        for Q in (minequi_D(l, P), np.eye(2 * l + 1)):
            assert np.abs(A - Q @ minequi_D(l, R) @ Q.T).max() > 1e-2


def test_clebsch_gordan_agree_up_to_change_of_basis_and_sign(G):
    Qs = {l: minequi_D(l, P.T) for l in range(7)}
    signs = {}
    for l1, l2 in itertools.product(range(4), repeat=2):
        for l3 in range(abs(l1 - l2), l1 + l2 + 1):
            cg = np.asarray(G._clebsh_gordan_coeff(l1, l2, l3), dtype=np.float64)[:, :, 0, :]
            C = clebsch_gordan(l1, l2, l3).numpy()
            T = np.einsum("ia,jb,abc,kc->ijk", Qs[l1], Qs[l2], C, Qs[l3])
            s = float((cg * T).sum() / (T * T).sum())
            assert abs(abs(s) - 1) < 1e-10, (l1, l2, l3, s)  # same normalisation C^T C = I
            assert np.abs(cg - np.sign(s) * T).max() < 1e-10, (l1, l2, l3)
            signs[(l1, l2, l3)] = int(np.sign(s))
    # the sign conventions differ (so a sign is really needed, and the check above is not vacuous)
    assert set(signs.values()) == {-1, 1}
