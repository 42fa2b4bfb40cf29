"""minequi agrees with e3nn 0.6.0 (a test/benchmark-only dependency; minequi never imports it).

* spherical harmonics: identical for l <= 8 in all three normalisations;
* Irrep.D_from_matrix: identical on O(3);
* Clebsch-Gordan: ``clebsch_gordan(l1, l2, l3) = s * sqrt(2 l3 + 1) * o3.wigner_3j(l1, l2, l3)``
  with ``s = +-1``.  e3nn's sign is inherited from the complex Condon-Shortley
  coefficients through its change of basis; ours makes the first significant
  entry positive.  So ``s`` is the sign of the first (row-major) entry of e3nn's
  ``wigner_3j`` with magnitude above 1e-9.  No parity rule reproduces it (none of
  (-1)^(l1+l2+l3), (-1)^l1, (-1)^l2, (-1)^l3, (-1)^(l1-l3), (-1)^((l1+l2-l3)/2)
  does); the table for l1, l2 <= 3 is recorded below.
* Irreps strings: the same round trip as e3nn's Irreps.
"""
import math

import pytest

e3nn = pytest.importorskip("e3nn")
import torch  # noqa: E402
from e3nn import o3  # noqa: E402

from minequi.clebsch_gordan import clebsch_gordan  # noqa: E402
from minequi.irreps import Irrep, Irreps  # noqa: E402
from minequi.spherical_harmonics import spherical_harmonics  # noqa: E402
from minequi.testing import rand_orthogonal  # noqa: E402

# s(l1, l2, l3) with clebsch_gordan = s * sqrt(2 l3 + 1) * e3nn wigner_3j (measured, e3nn 0.6.0)
E3NN_SIGN = {
    (0, 0, 0): 1, (0, 1, 1): 1, (0, 2, 2): 1, (0, 3, 3): 1, (1, 0, 1): 1, (1, 1, 0): 1, (1, 1, 1): 1,
    (1, 1, 2): -1, (1, 2, 1): 1, (1, 2, 2): -1, (1, 2, 3): -1, (1, 3, 2): 1, (1, 3, 3): -1, (1, 3, 4): -1,
    (2, 0, 2): 1, (2, 1, 1): 1, (2, 1, 2): 1, (2, 1, 3): -1, (2, 2, 0): 1, (2, 2, 1): -1, (2, 2, 2): -1,
    (2, 2, 3): 1, (2, 2, 4): 1, (2, 3, 1): 1, (2, 3, 2): -1, (2, 3, 3): -1, (2, 3, 4): 1, (2, 3, 5): 1,
    (3, 0, 3): 1, (3, 1, 2): 1, (3, 1, 3): 1, (3, 1, 4): -1, (3, 2, 1): 1, (3, 2, 2): 1, (3, 2, 3): -1,
    (3, 2, 4): -1, (3, 2, 5): 1, (3, 3, 0): 1, (3, 3, 1): -1, (3, 3, 2): -1, (3, 3, 3): 1, (3, 3, 4): 1,
    (3, 3, 5): 1, (3, 3, 6): -1,
}


@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
def test_spherical_harmonics_equal_e3nn(normalization):
    x = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for l in range(9):
        ours = spherical_harmonics(l, x, normalize=True, normalization=normalization)
        theirs = o3.spherical_harmonics(l, x, normalize=True, normalization=normalization)
        assert (ours - theirs).abs().max() < 1e-13, (l, normalization)
    ls = list(range(9))
    ours = spherical_harmonics(ls, x, normalize=False, normalization=normalization)
    theirs = o3.spherical_harmonics(ls, x, normalize=False, normalization=normalization)
    assert (ours - theirs).abs().max() < 1e-11 * (1 + theirs.abs().max())


def test_spherical_harmonics_at_zero_equal_e3nn():
    x = torch.zeros(3, 3, dtype=torch.float64)
    ls = list(range(5))
    for normalization in ["component", "norm", "integral"]:
        ours = spherical_harmonics(ls, x, normalization=normalization)
        assert torch.equal(ours, o3.spherical_harmonics(ls, x, normalize=True, normalization=normalization))


@pytest.fixture
def float64_default():
    """e3nn builds some intermediate tensors in the default dtype; make that float64 for a fair comparison."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_D_from_matrix_equal_e3nn(float64_default):
    Q = rand_orthogonal(50, generator=torch.Generator().manual_seed(1))
    for l in range(9):
        for p in (1, -1):
            ours = Irrep(l, p).D_from_matrix(Q)
            theirs = o3.Irrep(l, p).D_from_matrix(Q)
            assert (ours - theirs).abs().max() < 1e-12, (l, p)
    irreps = "2x0e+1o+1e+2x2o+3e"
    assert (Irreps(irreps).D_from_matrix(Q) - o3.Irreps(irreps).D_from_matrix(Q)).abs().max() < 1e-12


def test_clebsch_gordan_is_signed_rescaled_wigner_3j():
    for l1 in range(5):
        for l2 in range(5):
            for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                C = clebsch_gordan(l1, l2, l3)
                W = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * (2 * l3 + 1) ** 0.5
                flat = W.reshape(-1)
                s = 1 if flat[flat.abs() > 1e-9][0] > 0 else -1
                assert (C - s * W).abs().max() < 1e-12, (l1, l2, l3)
                if (l1, l2, l3) in E3NN_SIGN:
                    assert s == E3NN_SIGN[(l1, l2, l3)], (l1, l2, l3)
    assert len(E3NN_SIGN) == sum(1 for a in range(4) for b in range(4) for _ in range(abs(a - b), a + b + 1))


@pytest.mark.parametrize("s", ["16x0e+8x1o+4x2e", "1x0e", "0e+1o", "2x1o+3x1e+1x0o", "0x2e+5x3o", "", " 3x1e + 2o "])
def test_irreps_strings_agree_with_e3nn(s):
    assert str(Irreps(s)) == str(o3.Irreps(s))
    assert Irreps(s).dim == o3.Irreps(s).dim
    assert Irreps(s).num_irreps == o3.Irreps(s).num_irreps
    assert [(mul, (ir.l, ir.p)) for mul, ir in Irreps(s)] == [(mul, (ir.l, ir.p)) for mul, ir in o3.Irreps(s)]
    assert [sl for sl in Irreps(s).slices()] == list(o3.Irreps(s).slices())


def test_irreps_sort_and_simplify_agree_with_e3nn():
    s = "1e+0e+1o+2x0e+1o"
    assert str(Irreps(s).sort()) == str(o3.Irreps(s).sort().irreps)
    assert str(Irreps("1x0e+2x0e+1x1o").simplify()) == str(o3.Irreps("1x0e+2x0e+1x1o").simplify())


# ---------------------------------------------------------------------------
# TensorProduct with instructions: the same weight layout, normalisation and outputs as
# e3nn's o3.TensorProduct, up to the sign s(l1, l2, l3) of each path (the table above)
# ---------------------------------------------------------------------------
def _e3nn_sign(l1, l2, l3):
    """s with clebsch_gordan(l1, l2, l3) = s * sqrt(2 l3 + 1) * o3.wigner_3j(l1, l2, l3)."""
    W = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * (2 * l3 + 1) ** 0.5
    s = 1.0 if (clebsch_gordan(l1, l2, l3) * W).sum() > 0 else -1.0
    assert (clebsch_gordan(l1, l2, l3) - s * W).abs().max() < 1e-12
    return s


def _path_signs(tp):
    """Per-weight sign vector: e3nn's weights times this give minequi's outputs."""
    return torch.cat([torch.full((p.weight_stop - p.weight_start,), _e3nn_sign(p.l1, p.l2, p.l3),
                                 dtype=torch.float64) for p in tp.paths])


def _instructions(in1, in2, out, mode):
    e1, e2, eo = Irreps(in1), Irreps(in2), Irreps(out)
    return [(i1, i2, io, mode) for i1, (m1, r1) in enumerate(e1) for i2, (_, r2) in enumerate(e2)
            for io, (mo, ro) in enumerate(eo)
            if abs(r1.l - r2.l) <= ro.l <= r1.l + r2.l and r1.p * r2.p == ro.p and (mode == "uvw" or m1 == mo)]


CASES = [
    # (irreps_in1, irreps_in2, irreps_out, mode)
    ("8x0e+8x1o+8x2e", "0e+1o+2e", "8x0e+8x1o+8x2e", "uvu"),  # a TFN / NequIP edge product
    ("3x0e+2x1o+2x2e+1x3o", "2x0e+1o+2x2e", "3x0e+2x1o+2x1e+2x2e+2x2o+1x3o", "uvu"),  # mul2 > 1, l = 3
    ("3x0e+2x1o+2x2e", "2x0e+1o+2e", "2x0e+3x1o+1x1e+2x2e", "uvw"),
]


@pytest.mark.parametrize("in1,in2,out,mode", CASES)
@pytest.mark.parametrize("shared", [True, False])
def test_tensor_product_instructions_equal_e3nn(float64_default, in1, in2, out, mode, shared):
    from minequi import TensorProduct

    ins = _instructions(in1, in2, out, mode)
    ins = ins[1::2] + ins[0::2]  # not in a sorted order: the weight layout follows the list
    ours = TensorProduct(in1, in2, out, instructions=ins, shared_weights=shared, internal_weights=False)
    theirs = o3.TensorProduct(in1, in2, out, [(a, b, c, m, True) for a, b, c, m in ins],
                              shared_weights=shared, internal_weights=False)
    assert ours.weight_numel == theirs.weight_numel
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(10, Irreps(in1).dim, generator=g)
    x2 = torch.randn(10, Irreps(in2).dim, generator=g)
    w = torch.randn(*(() if shared else (10,)), ours.weight_numel, generator=g)
    y = ours(x1, x2, w)
    # measured: max difference 4.2e-15 over these cases (outputs of size ~5)
    torch.testing.assert_close(y, theirs(x1, x2, w * _path_signs(ours)), atol=5e-13, rtol=0)
    # the signs matter (negative control): without them some paths disagree
    if any(_e3nn_sign(p.l1, p.l2, p.l3) < 0 for p in ours.paths):
        assert (y - theirs(x1, x2, w)).abs().max() > 1e-2
    # e3nn's normalisation constants are ours (irrep_normalization="component", path_normalization="element")
    for p, ins_e3nn in zip(ours.paths, theirs.instructions):
        assert abs(p.alpha * (2 * p.l3 + 1) ** 0.5 - ins_e3nn.path_weight) < 1e-12
        assert (p.weight_stop - p.weight_start) == math.prod(ins_e3nn.path_shape)
