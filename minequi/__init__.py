"""minequi: a small, readable library of equivariant neural networks.

Runtime dependencies: torch and numpy only.  The symbolic (sympy) derivations
live in :mod:`minequi.symbolic`, which is never imported by this package.

Conventions (axes, m order, the action ``x @ R.T``, normalisations) are
documented once, in :mod:`minequi.conventions`.
"""
from .testing import rand_rotation, rand_orthogonal, assert_equivariant, equivariance_error
from .groups import FiniteGroup, cyclic_group, dihedral_group
from .groupconv import LiftingConv2d, GroupConv2d, GroupPool, SpatialPool2d, group_pool, spatial_pool, transform_image, transform_feature_map

from .irreps import Irrep, Irreps
from .so3 import so3_generators, wigner_D
from .spherical_harmonics import spherical_harmonics, SphericalHarmonics
from .clebsch_gordan import clebsch_gordan
from .tensor_product import TensorProduct
from .linear import Linear
from .gate import Gate
from .graph import complete_graph, radius_graph, scatter_sum, scatter_mean, scatter_softmax
from .radial import BesselBasis, PolynomialCutoff
from .egnn import EGNNLayer, EGNN
from .point_conv import PointConv
from .tfn import TensorFieldNetwork
from .rigid import Rigid
from .ipa import InvariantPointAttention
from .neighbor_list import neighbor_list, batched_neighbor_list
from .forces import energy_forces_stress
from .potential import InteratomicPotential
from .attention import EquivariantAttention, SE3Transformer

__version__ = "0.1.0"
