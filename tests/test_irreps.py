"""Tests of minequi.irreps: Irrep / Irreps values, parsing, layout and O(3) representation matrices."""
import copy
import pickle

import pytest
import torch

from minequi.irreps import Irrep, Irreps
from minequi.so3 import wigner_D
from minequi.testing import rand_orthogonal, rand_rotation


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- Irrep
def test_irrep_forms():
    assert Irrep("1o") == Irrep(1, -1) == Irrep((1, -1)) == Irrep(Irrep("1o")) == (1, -1)
    assert str(Irrep(2, 1)) == "2e" and repr(Irrep(0, -1)) == "0o"
    assert Irrep("3e").l == 3 and Irrep("3e").p == 1 and Irrep("3e").dim == 7
    assert Irrep(" 12o ") == Irrep(12, -1)
    assert hash(Irrep("1o")) == hash(Irrep(1, -1))
    assert {Irrep("1o"), Irrep(1, -1), Irrep("1e")} == {Irrep("1o"), Irrep("1e")}
    for s in ["0e", "0o", "1e", "7o", "10e"]:
        assert str(Irrep(s)) == s
    assert 3 * Irrep("1o") == Irreps("3x1o") == Irrep("1o") * 3
    assert pickle.loads(pickle.dumps(Irrep("2o"))) == Irrep("2o")
    assert copy.deepcopy(Irrep("2o")) == Irrep("2o")


@pytest.mark.parametrize("bad", ["1x", "3q", "-1e", "e", "1", "", "1oo", "1x1o", "1.5e"])
def test_irrep_bad_strings(bad):
    with pytest.raises(ValueError, match=r"invalid irrep string .*expected '<l><p>'"):
        Irrep(bad)


def test_irrep_bad_values():
    with pytest.raises(ValueError, match=r"irrep degree l must be a non-negative int, got -1"):
        Irrep(-1, 1)
    with pytest.raises(ValueError, match=r"irrep parity p must be \+1 .* or -1 .*, got 0"):
        Irrep(1, 0)
    with pytest.raises(ValueError, match=r"irrep parity p"):
        Irrep(1, True)
    with pytest.raises(TypeError, match=r"Irrep expects a string like '1o'"):
        Irrep(1.5)
    with pytest.raises(ValueError, match=r"irrep degree l must be a non-negative int, got 1\.5"):
        Irrep(1.5, 1)
    import numpy as np

    assert Irrep(np.int64(2), np.int64(-1)) == Irrep("2o")


# ----------------------------------------------------------------------------- Irreps
def test_irreps_string_round_trip():
    for s in ["16x0e+8x1o+4x2e", "1x0e", "2x1o+3x1e+1x0o", "0x2e+5x3o", ""]:
        assert str(Irreps(s)) == s
        assert Irreps(str(Irreps(s))) == Irreps(s)
    assert str(Irreps("0e+1o")) == "1x0e+1x1o"
    assert Irreps(" 2 x 1o + 3x0e ") == Irreps("2x1o+3x0e")


@pytest.mark.parametrize("bad", ["1x", "3q", "-1e", "2x1o+", "x1e", "+1e", "2y1o", "1e++2o", "ax1o", "-2x1o"])
def test_irreps_bad_strings(bad):
    with pytest.raises(ValueError, match=r"invalid irreps string .*expected terms '<mul>x<l><p>'"):
        Irreps(bad)
    try:
        Irreps(bad)
    except ValueError as e:
        assert repr(bad) in str(e)


def test_irreps_properties():
    irreps = Irreps("16x0e+8x1o+4x2e")
    assert irreps.dim == 16 + 24 + 20
    assert irreps.num_irreps == 28
    assert irreps.lmax == 2
    assert len(irreps) == 3
    assert [(mul, ir) for mul, ir in irreps] == [(16, Irrep("0e")), (8, Irrep("1o")), (4, Irrep("2e"))]
    assert irreps[1].mul == 8 and irreps[1].ir == Irrep("1o") and irreps[1].dim == 24
    assert irreps[1:] == Irreps("8x1o+4x2e") and isinstance(irreps[1:], Irreps)
    assert irreps.slices() == [slice(0, 16), slice(16, 40), slice(40, 60)]
    assert irreps.ls == [0] * 16 + [1] * 8 + [2] * 4
    with pytest.raises(ValueError, match="empty"):
        Irreps("").lmax
    assert Irreps("").dim == 0 and Irreps().dim == 0


def test_irreps_constructors_and_algebra():
    assert Irreps([(2, (1, -1)), (1, "0e")]) == Irreps("2x1o+1x0e")
    assert Irreps([(2, Irrep("1o"))]) == Irreps("2x1o")
    assert Irreps(Irrep("2e")) == Irreps("1x2e")
    assert Irreps(["1o", Irrep("0e")]) == Irreps("1x1o+1x0e")
    assert Irreps("1x0e") + Irreps("2x1o") == Irreps("1x0e+2x1o")
    assert Irreps("1x0e") + "1x1e" == Irreps("1x0e+1x1e")
    assert "1x1e" + Irreps("1x0e") == Irreps("1x1e+1x0e")
    assert Irreps("1x0e") * 2 == Irreps("1x0e+1x0e")
    assert hash(Irreps("2x1o")) == hash(Irreps([(2, (1, -1))]))
    assert Irreps("1x0e+2x0e+0x1o+1x1o").simplify() == Irreps("3x0e+1x1o")
    assert Irreps("1e+0e+1o").sort() == Irreps("0e+1o+1e")
    assert pickle.loads(pickle.dumps(Irreps("2x1o+0e"))) == Irreps("2x1o+0e")
    with pytest.raises(ValueError, match=r"multiplicity must be a non-negative int, got -1"):
        Irreps([(-1, "1o")])
    with pytest.raises(ValueError, match=r"invalid Irreps entry"):
        Irreps([(1, 2, 3)])
    with pytest.raises(TypeError, match=r"Irreps expects"):
        Irreps(3)


def test_randn():
    irreps = Irreps("2x0e+1x1o")
    a = irreps.randn(4, 3, dtype=torch.float64, generator=gen(1))
    b = irreps.randn(4, 3, dtype=torch.float64, generator=gen(1))
    assert a.shape == (4, 3, 5) and a.dtype == torch.float64 and torch.equal(a, b)
    assert irreps.randn().shape == (5,)



def test_randn_e3nn_form():
    """e3nn's ``irreps.randn(10, -1)``: the one -1 marks where the irreps dimension goes."""
    irreps = Irreps("2x0e+1x1o")  # dim 5
    assert irreps.randn(10, -1).shape == (10, 5)
    assert irreps.randn(-1).shape == (5,)
    assert irreps.randn(-1, 7).shape == (5, 7)
    assert irreps.randn(2, -1, 3).shape == (2, 5, 3)
    assert irreps.randn(0, -1).shape == (0, 5)
    # a tuple / torch.Size is read as the size, in either form
    assert irreps.randn((4, 3)).shape == (4, 3, 5) == irreps.randn(torch.Size([4, 3])).shape
    assert irreps.randn([10, -1]).shape == (10, 5)
    import numpy as np

    assert irreps.randn(np.int64(3), -1).shape == (3, 5)
    # the same random numbers as the current form, only placed differently
    a = irreps.randn(10, -1, dtype=torch.float64, generator=gen(2))
    b = irreps.randn(10, dtype=torch.float64, generator=gen(2))
    assert a.dtype == torch.float64 and torch.equal(a, b)
    # the e3nn form agrees with e3nn itself where it is installed (the bench extra)
    o3 = pytest.importorskip("e3nn.o3")
    for size in [(10, -1), (-1,), (-1, 7), (2, -1, 3)]:
        assert irreps.randn(*size).shape == o3.Irreps("2x0e+1x1o").randn(*size).shape


@pytest.mark.parametrize("size, exc, msg", [
    ((-1, -1), ValueError, r"may contain at most one -1 \(the irreps dimension\), got \(-1, -1\)"),
    ((3, -1, 2, -1), ValueError, r"may contain at most one -1 .*got \(3, -1, 2, -1\)"),
    ((10, -2), ValueError, r"entries must be non-negative, or -1 .*got -2 at position 1 of \(10, -2\)"),
    ((-5,), ValueError, r"entries must be non-negative, or -1 .*got -5 at position 0"),
    ((2.0, -1), TypeError, r"entries must be ints, got 2\.0 at position 0"),
    ((3, "x"), TypeError, r"entries must be ints, got 'x' at position 1"),
    ((True, -1), TypeError, r"entries must be ints, got True"),
])
def test_randn_bad_size(size, exc, msg):
    with pytest.raises(exc, match=r"^Irreps\.randn: size " + msg):
        Irreps("2x0e+1x1o").randn(*size)


# ----------------------------------------------------------------------------- D_from_matrix
def test_D_from_matrix_low_irreps():
    Q = rand_orthogonal(200, generator=gen(2))
    det = torch.linalg.det(Q)
    assert (det.abs() - 1).abs().max() < 1e-14
    det = det.sign()  # exactly +-1
    assert (Irrep("1o").D_from_matrix(Q) - Q).abs().max() < 1e-14
    assert (Irrep("1e").D_from_matrix(Q) - det[:, None, None] * Q).abs().max() < 1e-14
    assert torch.equal(Irrep("0o").D_from_matrix(Q)[:, 0, 0], det)
    assert torch.equal(Irrep("0e").D_from_matrix(Q), torch.ones(200, 1, 1, dtype=torch.float64))
    # inversion acts as the parity
    inv = -torch.eye(3, dtype=torch.float64)
    for s in ["0e", "0o", "1e", "1o", "2e", "2o", "5o"]:
        ir = Irrep(s)
        assert (ir.D_from_matrix(inv) - ir.p * torch.eye(ir.dim, dtype=torch.float64)).abs().max() < 1e-14
    # on rotations it is wigner_D
    R = rand_rotation(10, generator=gen(3))
    assert (Irrep("4o").D_from_matrix(R) - wigner_D(4, R)).abs().max() < 1e-15


def test_D_from_matrix_is_an_o3_representation():
    irreps = Irreps("2x0e+0o+1o+1e+2e+2o+3o+4e")
    Q1 = rand_orthogonal(30, generator=gen(4))
    Q2 = rand_orthogonal(30, generator=gen(5))
    D1, D2 = irreps.D_from_matrix(Q1), irreps.D_from_matrix(Q2)
    assert D1.shape == (30, irreps.dim, irreps.dim)
    assert (irreps.D_from_matrix(Q1 @ Q2) - D1 @ D2).abs().max() < 1e-13
    assert (D1 @ D1.transpose(-1, -2) - torch.eye(irreps.dim, dtype=torch.float64)).abs().max() < 1e-13
    # block structure: off-diagonal blocks are zero, diagonal blocks are the irreps' D
    start = 0
    for mul, ir in irreps:
        for _ in range(mul):
            blk = D1[:, start:start + ir.dim, start:start + ir.dim]
            assert torch.equal(blk, ir.D_from_matrix(Q1))
            off = D1[:, start:start + ir.dim].clone()
            off[:, :, start:start + ir.dim] = 0
            assert torch.equal(off, torch.zeros_like(off))
            start += ir.dim


def test_negative_control_wrong_parity_breaks_o3_homomorphism_check():
    """A 'parity' that ignores det (p^k with k from the wrong sign) is not a representation of O(3)."""
    Q1 = rand_orthogonal(50, generator=gen(6))
    Q2 = rand_orthogonal(50, generator=gen(7))

    def wrong_D(Q):  # forgets to undo the reflection before calling wigner_D: D^1(det Q . Q) without p^k
        det = torch.linalg.det(Q)
        return wigner_D(1, Q * det[:, None, None])

    # wrong_D(Q) = det(Q) Q is the 1e representation, so as a model of 1o it fails...
    assert (wrong_D(Q1) - Irrep("1o").D_from_matrix(Q1)).abs().max() > 0.5
    # ...while it *is* a homomorphism (of 1e): the homomorphism check alone cannot tell 1o from 1e
    assert (wrong_D(Q1 @ Q2) - wrong_D(Q1) @ wrong_D(Q2)).abs().max() < 1e-13


def test_D_from_matrix_bad_inputs():
    with pytest.raises(ValueError, match=r"Q must have shape \[\.\.\., 3, 3\], got \(2, 2\)"):
        Irrep("1o").D_from_matrix(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Q must have shape \[\.\.\., 3, 3\], got \(4, 3, 2\)"):
        Irreps("1o").D_from_matrix(torch.zeros(4, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Q must be orthogonal"):
        Irreps("1o").D_from_matrix(torch.ones(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Q must be orthogonal"):
        Irrep("2e").D_from_matrix(1.01 * torch.eye(3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"Q must be a floating-point tensor"):
        Irrep("2e").D_from_matrix(torch.eye(3, dtype=torch.int32))
