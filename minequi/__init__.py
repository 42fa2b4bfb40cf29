"""minequi: a small, readable library of equivariant neural networks.

Runtime dependencies: torch and numpy only.  The symbolic (sympy) derivations
live in :mod:`minequi.symbolic`, which is never imported by this package.

Conventions (axes, m order, the action ``x @ R.T``, normalisations) are
documented once, in :mod:`minequi.conventions`.
"""
from .testing import rand_rotation, rand_orthogonal, assert_equivariant, equivariance_error

__version__ = "0.1.0"
