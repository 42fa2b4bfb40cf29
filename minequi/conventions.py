r"""Every convention of minequi, in one place.

This module holds no code of consequence: it is the reference that every other
module's docstring points to, and the book's *Conventions* page renders it.

Axes and points
---------------
Cartesian axes are ``(x, y, z)`` in that order.  A point cloud is a tensor
``[..., N, 3]`` whose *rows* are points.  A matrix ``R`` acts on points by the
usual column-vector rule :math:`x \mapsto R x`; on a batch of row vectors that
is ``x @ R.T``.  Likewise a representation matrix ``D`` acts on a feature
tensor ``f`` of shape ``[..., dim]`` as ``f @ D.T``.

Groups sampled in tests
-----------------------
SO(3) and O(3) elements are Haar-uniform (see :mod:`minequi.testing`); O(3)
samples are reflections half of the time.  E(3) elements are pairs ``(Q, t)``
acting as ``x @ Q.T + t``.

Finite groups (C_N, D_N, the point groups of p4 and p4m)
--------------------------------------------------------
C_N has elements :math:`r^k`, ``k = 0..N-1``, where :math:`r` is the rotation
by :math:`2\pi/N` counter-clockwise in the ``(x, y)`` plane.  D_N has the
``2N`` elements :math:`r^k m^s` indexed ``k + N*s`` (``s`` in ``{0, 1}``), where
:math:`m` is the mirror :math:`(x, y) \mapsto (x, -y)`.  Their 2x2 matrices
are :math:`R(2\pi k/N)\, M^s`.  p4's point group is C_4 and p4m's is D_4 in
exactly this order.

Irreducible representations of O(3): ``Irrep`` and ``Irreps``
-------------------------------------------------------------
As in e3nn: an irrep is written ``"<l><p>"`` with ``l = 0, 1, 2, ...`` and
parity ``p`` = ``e`` (even, +1) or ``o`` (odd, -1); a direct sum is written
``"16x0e+8x1o"``.  Components are laid out irrep by irrep, multiplicity-major:
``"2x1o"`` is ``[u0_m-1, u0_m0, u0_m1, u1_m-1, u1_m0, u1_m1]``.

For ``Q`` in O(3), the representation matrix of irrep ``(l, p)`` is

.. math:: D^{l,p}(Q) = p^{k}\, D^l(\det(Q)\, Q), \qquad k = (1 - \det Q)/2,

so the inversion :math:`-I` acts as :math:`p` on ``(l, p)`` (which is why a
polar vector is ``1o`` and a pseudovector such as a cross product is ``1e``).

Order of m and the real basis: :math:`D^1(R) = R`
------------------------------------------------
Within an irrep, components are ordered ``m = -l, ..., l``.  The real basis is
chosen, as in e3nn, so that the ``l = 1`` components of a vector are exactly
``(x, y, z)``: **the rotation acts on ``1o`` features by the rotation matrix
itself**, :math:`D^1(R) = R`, and a position vector is a ``1o`` feature without
any permutation.  To achieve this the polar (``m = 0``) axis of the spherical
harmonics is the *y* axis: with the textbook real spherical harmonics
:math:`S_{lm}` (polar axis *z*, defined below),

.. math:: Y_{lm}(x, y, z) = S_{lm}(z, x, y).

Check for ``l = 1``: :math:`S_{1,(-1,0,1)}(x, y, z) \propto (y, z, x)`, so
:math:`Y_{1,(-1,0,1)}(x,y,z) \propto (x, y, z)`.

Textbook real harmonics (the basis the derivations start from): with the
complex :math:`Y_l^m` *including* the Condon-Shortley phase (as in sympy's
``Ynm``),

.. math::
   S_{lm} = \begin{cases}
     \sqrt{2}\,(-1)^m\, \mathrm{Im}\, Y_l^{|m|} & m < 0 \\
     Y_l^0 & m = 0 \\
     \sqrt{2}\,(-1)^m\, \mathrm{Re}\, Y_l^{m} & m > 0
   \end{cases}

so that, e.g., :math:`S_{1,1} = \sqrt{3/4\pi}\, x/r` and :math:`S_{1,-1} = \sqrt{3/4\pi}\, y/r`
with no sign.

Wigner D
--------
:math:`D^l(R)` is *defined* by the spherical harmonics:
:math:`Y^l(R x) = D^l(R)\, Y^l(x)` for every ``x`` (``Y^l`` a column of the
``2l+1`` harmonics).  It is a real orthogonal matrix, a homomorphism
:math:`D^l(R_1 R_2) = D^l(R_1) D^l(R_2)`, and :math:`D^1(R) = R`.  Features
transform as ``f @ D.T``.

Spherical harmonics normalisation
---------------------------------
``spherical_harmonics(l, x, normalize=True, normalization=...)``:

* ``"integral"``: :math:`\int_{S^2} Y_{lm}^2 \, d\Omega = 1` (the textbook normalisation);
* ``"component"`` (default): :math:`\sum_m Y_{lm}(\hat x)^2 = 2l+1`, i.e. each
  component has mean square 1 over the sphere (``sqrt(4 pi)`` times ``"integral"``);
* ``"norm"``: :math:`\sum_m Y_{lm}(\hat x)^2 = 1` (``sqrt(4 pi / (2l+1))`` times ``"integral"``).

These are e3nn's three normalisations.  With ``normalize=False`` the input is
not projected to the sphere and the result is the homogeneous harmonic
polynomial :math:`|x|^l\, Y_{lm}(\hat x)`.

Clebsch-Gordan coefficients
---------------------------
``clebsch_gordan(l1, l2, l3)`` is a float64 tensor ``C`` of shape
``[2l1+1, 2l2+1, 2l3+1]`` in the real basis above, nonzero only when
:math:`|l_1 - l_2| \le l_3 \le l_1 + l_2`, with

* equivariance: :math:`\sum_{ab} D^{l_1}_{ia} D^{l_2}_{jb} C_{abk} = \sum_c C_{ijc} D^{l_3}_{ck}`,
  i.e. :math:`(D^{l_1} \otimes D^{l_2})\, C = C\, D^{l_3}` with ``C`` reshaped to
  ``[(2l1+1)(2l2+1), 2l3+1]``; so ``einsum("i,j,ijk->k", u, v, C)`` maps
  ``(u, v)`` to an ``l3`` feature equivariantly;
* orthonormal columns: :math:`C^\top C = I_{2l_3+1}` (the usual CG
  normalisation); e3nn's ``wigner_3j`` has Frobenius norm 1 instead, so
  ``C = ± sqrt(2 l3 + 1) * wigner_3j`` (the sign is given in the book);
* sign: the first entry, in row-major order, whose magnitude exceeds 1e-9 is positive.

Parity of a product: ``(l1, p1) x (l2, p2) -> (l3, p1 * p2)``.
"""
