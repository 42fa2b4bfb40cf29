r"""Real Clebsch-Gordan coefficients: the equivariant map :math:`l_1 \otimes l_2 \to l_3`.

Contract (:mod:`minequi.conventions`): ``C = clebsch_gordan(l1, l2, l3)`` has shape
``[2l1+1, 2l2+1, 2l3+1]`` and, with ``C`` reshaped to ``[(2l1+1)(2l2+1), 2l3+1]``,

* equivariance :math:`(D^{l_1}(R) \otimes D^{l_2}(R))\, C = C\, D^{l_3}(R)`;
* orthonormal columns :math:`C^\top C = I`;
* sign: the first entry in row-major order with magnitude above 1e-9 is positive.

Method (all real, float64).  Differentiating the equivariance at the identity
gives, for each generator :math:`a = x, y, z` of :func:`minequi.so3.so3_generators`,

.. math:: (J^{l_1}_a \otimes I + I \otimes J^{l_2}_a)\, C = C\, J^{l_3}_a,

so the columns of ``C`` span the copy of :math:`l_3` inside :math:`l_1 \otimes l_2`
(it occurs exactly once).  That copy is the eigenspace of the Casimir
:math:`\sum_a (J_a^{\otimes})^2` for the eigenvalue :math:`-l_3(l_3+1)`
(eigenvalues of different ``l`` are at least 2 apart, so ``eigh`` separates them
cleanly).  If ``B`` is an orthonormal basis of it, ``C = B M`` for an orthogonal
``(2l3+1) x (2l3+1)`` matrix ``M`` with :math:`K_a M = M J^{l_3}_a`, where
:math:`K_a = B^\top J^{\otimes}_a B`; ``M`` is unique up to sign (Schur's lemma).
We find it with the textbook highest-weight construction: in both representations
take the top eigenvector of :math:`i J_y` (the polar axis is *y*) and apply the
lowering operator repeatedly; the two standard bases so obtained agree up to a
phase, and ``M`` maps one onto the other.

Relation to e3nn: ``C = s * sqrt(2 l3 + 1) * e3nn.o3.wigner_3j(l1, l2, l3)`` with a
sign ``s = +-1`` per triple: both are real, in the same basis, and unique up to
scale (Schur), so they differ only in norm (e3nn's has Frobenius norm 1) and in
the sign rule.  e3nn's sign is inherited from the complex Condon-Shortley
coefficients through its change of basis, so ``s`` is simply the sign of the first
significant entry of e3nn's tensor; it follows no parity rule in ``l1, l2, l3``
(e.g. ``s = -1`` for (1, 1, 2) and (2, 2, 1) but ``+1`` for (1, 1, 1) and (2, 2, 3)).
Cost: an ``eigh`` of size ``(2l1+1)(2l2+1)``; results are cached.
"""
from __future__ import annotations

import functools

import torch

from .so3 import _check_l, so3_generators

__all__ = ["clebsch_gordan"]


def _ladder_basis(J: torch.Tensor) -> torch.Tensor:
    r"""Standard complex basis ``[n, n]`` (columns ``m = l..-l``) of an irreducible real rep with generators ``J``.

    With :math:`L_a = i J_a` and the polar axis *y*, :math:`L_3 = i J_y` has the
    eigenvalues ``m = -l..l`` and :math:`L_- = i J_z + J_x` lowers ``m`` by one.
    Start from the top eigenvector of :math:`L_3` and lower, normalising each step.
    Two equivalent representations treated this way give bases that match up to
    one overall phase (the lowering coefficients are positive in both).
    """
    Jc = J.to(torch.complex128)
    _, vecs = torch.linalg.eigh(1j * Jc[1])  # ascending eigenvalues -l..l
    lower = 1j * Jc[2] + Jc[0]
    cols = [vecs[:, -1]]
    for _ in range(J.shape[-1] - 1):
        v = lower @ cols[-1]
        cols.append(v / v.norm())
    return torch.stack(cols, dim=1)  # [n, n]


@functools.lru_cache(maxsize=None)
def _clebsch_gordan(l1: int, l2: int, l3: int) -> torch.Tensor:
    n1, n2, n3 = 2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1
    J1, J2, J3 = so3_generators(l1), so3_generators(l2), so3_generators(l3)  # [3, n, n]
    I1 = torch.eye(n1, dtype=torch.float64)
    I2 = torch.eye(n2, dtype=torch.float64)
    Jt = torch.stack([torch.kron(J1[a], I2) + torch.kron(I1, J2[a]) for a in range(3)])  # [3, n1n2, n1n2]
    casimir = sum(Jt[a] @ Jt[a] for a in range(3))  # [n1n2, n1n2], symmetric, eigenvalues -l(l+1)
    evals, evecs = torch.linalg.eigh((casimir + casimir.T) / 2)
    pick = (evals + l3 * (l3 + 1)).abs() < 0.5
    B = evecs[:, pick]  # [n1n2, n3], orthonormal basis of the l3 copy
    assert B.shape[1] == n3, (l1, l2, l3, B.shape)
    K = B.T @ Jt @ B  # [3, n3, n3]: the l3 generators in the basis B
    # The intertwiner M with K_a M = M J3_a (unique up to scale, Schur's lemma) maps
    # the standard basis of J3 onto the standard basis of K.
    M = _ladder_basis(K) @ _ladder_basis(J3).conj().T  # [n3, n3], a phase times a real orthogonal matrix
    k = int(M.abs().argmax())
    M = M * (M.reshape(-1)[k].abs() / M.reshape(-1)[k])  # remove the phase
    assert M.imag.abs().max() < 1e-10, float(M.imag.abs().max())
    M = M.real
    C = (B @ M).reshape(n1, n2, n3)  # [n1, n2, n3]
    C = C.contiguous()
    flat = C.reshape(-1)
    first = int(torch.nonzero(flat.abs() > 1e-9)[0])
    if flat[first] < 0:
        C = -C
    C[C.abs() < 1e-15] = 0.0  # exact zeros where the selection rules force them
    return C


def clebsch_gordan(l1: int, l2: int, l3: int) -> torch.Tensor:
    r"""Real Clebsch-Gordan tensor ``[2l1+1, 2l2+1, 2l3+1]`` (float64, a fresh copy).

    ``einsum("i,j,ijk->k", u, v, C)`` maps an ``l1`` feature ``u`` and an ``l2``
    feature ``v`` to an ``l3`` feature equivariantly.  Requires the triangle rule
    :math:`|l_1 - l_2| \le l_3 \le l_1 + l_2` (``ValueError`` otherwise).

    >>> C = clebsch_gordan(1, 1, 0)          # the dot product, normalised
    >>> C[:, :, 0]
    tensor([[0.5774, 0.0000, 0.0000],
            [0.0000, 0.5774, 0.0000],
            [0.0000, 0.0000, 0.5774]], dtype=torch.float64)
    >>> C = clebsch_gordan(1, 1, 1)          # the cross product, normalised
    >>> u, v = torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64)
    >>> (torch.einsum("i,j,ijk->k", u, v, C) * 2**0.5).round(decimals=12)   # e_x cross e_y = e_z
    tensor([0., 0., 1.], dtype=torch.float64)
    """
    l1, l2, l3 = _check_l(l1, "l1"), _check_l(l2, "l2"), _check_l(l3, "l3")
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(
            f"clebsch_gordan({l1}, {l2}, {l3}) violates the triangle rule |l1 - l2| <= l3 <= l1 + l2"
        )
    return _clebsch_gordan(l1, l2, l3).clone()
