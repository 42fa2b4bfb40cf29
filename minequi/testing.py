r"""One shared way to *measure* equivariance.

A function :math:`f` is equivariant to a group :math:`G` acting on its inputs by
:math:`\rho_\text{in}` and on its outputs by :math:`\rho_\text{out}` when

.. math:: f(\rho_\text{in}(g)\, x) = \rho_\text{out}(g)\, f(x) \quad \text{for all } g \in G.

:func:`equivariance_error` samples group elements ``g``, evaluates both sides in
float64 and returns the largest absolute difference; :func:`assert_equivariant`
raises with a readable message (which sample, which output, which entry, how
large) when that error exceeds a tolerance.  Every test of the library and every
chapter of the book uses these two functions, so there is one definition of
"equivariant" in the project.

Group elements are plain values produced by *samplers*; the actions interpret
them.  Samplers provided here (all take a :class:`torch.Generator`):

* :func:`rand_rotation` / :func:`haar_so3` -- Haar-uniform rotations of SO(3),
  from a uniformly random unit quaternion (a normalised 4-D Gaussian vector is
  uniform on :math:`S^3`, and :math:`S^3 \to SO(3)` is a double cover that maps
  the uniform measure to the Haar measure).
* :func:`haar_o3` -- Haar-uniform elements of O(3) = SO(3) x {+I, -I}: a Haar
  rotation times a fair random sign, so half of the samples are reflections
  (det = -1).
* :func:`e3_sampler` -- elements ``(Q, t)`` of E(3): ``Q`` Haar on O(3), ``t``
  Gaussian.
* :func:`shift2d_sampler` -- cyclic translations of an ``H x W`` image, uniform.
* :func:`permutation_sampler` -- uniform permutations of ``n`` nodes.
* :func:`product_sampler` -- a tuple of independent elements (a direct product
  group, e.g. E(3) x S_n for a point cloud).

Conventions: points are rows, and a rotation acts as ``x @ R.T`` (so the column
vector convention :math:`x \mapsto R x` applied to each row).

Example
-------
>>> import torch
>>> from minequi.testing import equivariance_error, haar_o3
>>> norm = lambda x: x.norm(dim=-1)                      # invariant
>>> x = torch.randn(10, 3, dtype=torch.float64)
>>> err = equivariance_error(norm, x, haar_o3,
...                          act_in=lambda Q, x: x @ Q.T,
...                          act_out=lambda Q, y: y)
>>> err < 1e-12
True
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

__all__ = [
    "rand_rotation",
    "rand_orthogonal",
    "haar_so3",
    "haar_o3",
    "e3_sampler",
    "shift2d_sampler",
    "permutation_sampler",
    "product_sampler",
    "EquivarianceReport",
    "equivariance_report",
    "equivariance_error",
    "assert_equivariant",
]


# ----------------------------------------------------------------------------
# Haar-random elements of SO(3) and O(3)
# ----------------------------------------------------------------------------
def _check_n(n):
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise TypeError(f"n must be None or a non-negative int, got {n!r}")


def rand_rotation(n: int | None = None, *, dtype=torch.float64, generator=None, device=None):
    r"""Haar-uniform random rotation matrices of SO(3).

    A unit quaternion :math:`q = (w, x, y, z)` drawn uniformly on :math:`S^3`
    (a normalised standard Gaussian 4-vector) is mapped to its rotation matrix.
    The map :math:`S^3 \to SO(3)` is a 2:1 group homomorphism, and it pushes the
    uniform measure of :math:`S^3` forward to the Haar measure of SO(3).

    Args:
        n: number of matrices; ``None`` returns a single ``[3, 3]`` matrix.
    Returns:
        ``[n, 3, 3]`` (or ``[3, 3]``) with ``R @ R.T = I`` and ``det R = +1``.

    >>> R = rand_rotation(5, generator=torch.Generator().manual_seed(0))
    >>> R.shape, R.dtype
    (torch.Size([5, 3, 3]), torch.float64)
    >>> bool(torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand(5, 3, 3)))
    True
    >>> bool(torch.allclose(torch.linalg.det(R), torch.ones(5, dtype=R.dtype)))
    True
    """
    _check_n(n)
    m = 1 if n is None else n
    q = torch.randn(m, 4, dtype=dtype, generator=generator, device=device)  # [m, 4]
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(m, 3, 3)  # [m, 3, 3]
    return R[0] if n is None else R


def rand_orthogonal(n: int | None = None, *, dtype=torch.float64, generator=None, device=None):
    r"""Haar-uniform random elements of O(3) (rotations *and* reflections).

    O(3) is the direct product SO(3) x {+I, -I}, so its Haar measure is the
    product of the Haar measure of SO(3) and the uniform measure on the two
    signs: half of the returned matrices have determinant -1.

    >>> Q = rand_orthogonal(1000, generator=torch.Generator().manual_seed(0))
    >>> dets = torch.linalg.det(Q)
    >>> bool(((dets - 1).abs() < 1e-12).any() and ((dets + 1).abs() < 1e-12).any())
    True
    """
    _check_n(n)
    m = 1 if n is None else n
    R = rand_rotation(m, dtype=dtype, generator=generator, device=device)  # [m, 3, 3]
    sign = torch.randint(0, 2, (m,), generator=generator, device=device).to(dtype) * 2 - 1  # [m]
    Q = R * sign[:, None, None]
    return Q[0] if n is None else Q


# Samplers: callables ``sample(generator, dtype) -> element``.
def haar_so3(generator=None, dtype=torch.float64):
    """Sampler: one Haar-random rotation ``R`` ([3, 3])."""
    return rand_rotation(None, dtype=dtype, generator=generator)


def haar_o3(generator=None, dtype=torch.float64):
    """Sampler: one Haar-random element ``Q`` of O(3) ([3, 3]), a reflection half of the time."""
    return rand_orthogonal(None, dtype=dtype, generator=generator)


def e3_sampler(scale: float = 1.0):
    """Sampler factory for E(3): elements ``(Q, t)`` acting on points as ``x @ Q.T + t``.

    ``Q`` is Haar on O(3) (reflections included) and ``t`` is Gaussian with standard
    deviation ``scale`` (the Haar measure of the translations is not normalisable,
    so any full-support distribution is as good).
    """

    def sample(generator=None, dtype=torch.float64):
        Q = rand_orthogonal(None, dtype=dtype, generator=generator)
        t = scale * torch.randn(3, dtype=dtype, generator=generator)
        return Q, t

    return sample


def shift2d_sampler(height: int, width: int):
    """Sampler factory for the cyclic translations Z_H x Z_W of an image: ``(dy, dx)``, uniform."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height} x {width}")

    def sample(generator=None, dtype=None):
        dy = int(torch.randint(0, height, (), generator=generator))
        dx = int(torch.randint(0, width, (), generator=generator))
        return dy, dx

    return sample


def permutation_sampler(n: int):
    """Sampler factory for the symmetric group S_n: a uniform random permutation (a LongTensor)."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")

    def sample(generator=None, dtype=None):
        return torch.randperm(n, generator=generator)

    return sample


def product_sampler(*samplers):
    """Sampler of a direct product group: a tuple with one independent element per factor."""
    if not samplers:
        raise ValueError("product_sampler needs at least one sampler")

    def sample(generator=None, dtype=torch.float64):
        return tuple(s(generator, dtype) for s in samplers)

    return sample


# ----------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class EquivarianceReport:
    """What :func:`equivariance_report` measured.

    Attributes:
        max_error: the largest ``|f(g.x) - g.f(x)|`` over all samples, outputs and entries.
        errors: the max-abs error of each sample (length ``n_samples``).
        worst_sample: index of the sample with the largest error.
        worst_output: index of the output (when ``f`` returns a tuple) holding it.
        worst_entry: multi-index of the entry inside that output.
        scale: the largest ``|g.f(x)|`` seen, to judge the error relative to the data.
    """

    max_error: float
    errors: tuple
    worst_sample: int
    worst_output: int
    worst_entry: tuple
    scale: float

    def __str__(self):
        return (
            f"max |f(g.x) - g.f(x)| = {self.max_error:.3e} (output scale {self.scale:.3e}) "
            f"at sample {self.worst_sample}, output {self.worst_output}, entry {self.worst_entry}"
        )


def _unravel(idx: int, shape) -> tuple:
    """Multi-index of flat index ``idx`` in a row-major array of ``shape``.

    (Plain Python: ``torch.unravel_index`` runs ``torch._check``, which imports sympy,
    and minequi must run where only torch and numpy are installed.)

    >>> _unravel(5, (2, 3)), _unravel(0, ())
    ((1, 2), ())
    """
    entry = []
    for n in reversed(tuple(shape)):
        idx, i = divmod(idx, n)
        entry.append(i)
    return tuple(reversed(entry))


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _to_dtype(x, dtype):
    if torch.is_tensor(x) and x.is_floating_point():
        return x.to(dtype)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_dtype(v, dtype) for v in x)
    return x


def equivariance_report(
    f: Callable,
    inputs: Any,
    sample: Callable,
    act_in: Callable,
    act_out: Callable,
    *,
    n_samples: int = 8,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
) -> EquivarianceReport:
    r"""Measure :math:`\max_g |f(g \cdot x) - g \cdot f(x)|` over ``n_samples`` sampled ``g``.

    Args:
        f: the function (or ``torch.nn.Module``; a copy is converted to ``dtype``).
           Called as ``f(*inputs)`` when ``inputs`` is a tuple, else ``f(inputs)``.
        inputs: a tensor or a tuple of tensors (floating tensors are cast to ``dtype``).
        sample: ``sample(generator, dtype) -> g``, e.g. :func:`haar_o3`.
        act_in: ``act_in(g, inputs) -> transformed inputs`` (same structure as ``inputs``).
        act_out: ``act_out(g, outputs) -> transformed outputs`` (same structure as ``f``'s output).
        n_samples: how many group elements to draw.
        seed: seed of the :class:`torch.Generator` that draws them.
        dtype: precision of the check (``None`` keeps the inputs' dtype).
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if dtype is not None:
        inputs = _to_dtype(inputs, dtype)
        if isinstance(f, torch.nn.Module):
            f = copy.deepcopy(f).to(dtype)
    call = (lambda a: f(*a)) if isinstance(inputs, tuple) else f
    gen = torch.Generator().manual_seed(seed)
    y = call(inputs)
    errors, worst = [], (-1.0, 0, 0, ())
    scale = 0.0
    for k in range(n_samples):
        g = sample(gen, dtype if dtype is not None else torch.get_default_dtype())
        lhs = _as_tuple(call(act_in(g, inputs)))
        rhs = _as_tuple(act_out(g, y))
        if len(lhs) != len(rhs):
            raise ValueError(
                f"f returned {len(lhs)} outputs but act_out returned {len(rhs)}"
            )
        err_k = 0.0
        for j, (a, b) in enumerate(zip(lhs, rhs)):
            a, b = torch.as_tensor(a), torch.as_tensor(b)
            if a.shape != b.shape:
                raise ValueError(
                    f"output {j}: f(g.x) has shape {tuple(a.shape)} but g.f(x) has shape {tuple(b.shape)}"
                )
            if a.numel() == 0:
                continue
            diff = (a.detach() - b.detach()).abs()
            scale = max(scale, float(b.detach().abs().max()))
            e = float(diff.max())
            if e != e:  # NaN
                e = float("inf")
            if e > err_k:
                err_k = e
            if e > worst[0]:
                idx = int(diff.reshape(-1).nan_to_num(float("inf")).argmax())
                worst = (e, k, j, _unravel(idx, diff.shape))
        errors.append(err_k)
    e, k, j, entry = worst
    return EquivarianceReport(max(e, 0.0), tuple(errors), k, j, entry, scale)


def equivariance_error(f, inputs, sample, act_in, act_out, **kwargs) -> float:
    """The max-abs equivariance error (a float); see :func:`equivariance_report` for the arguments.

    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> equivariance_error(lambda x: x.sum(0), x, permutation_sampler(4),
    ...                    act_in=lambda p, x: x[p], act_out=lambda p, y: y) < 1e-12
    True
    """
    return equivariance_report(f, inputs, sample, act_in, act_out, **kwargs).max_error


def assert_equivariant(f, inputs, sample, act_in, act_out, *, atol: float = 1e-10, **kwargs):
    """Raise ``AssertionError`` if the equivariance error exceeds ``atol``; return the report.

    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> assert_equivariant(lambda x: x[0], x, permutation_sampler(4),
    ...                    act_in=lambda p, x: x[p], act_out=lambda p, y: y)
    Traceback (most recent call last):
    ...
    AssertionError: not equivariant: max |f(g.x) - g.f(x)| = ...
    """
    report = equivariance_report(f, inputs, sample, act_in, act_out, **kwargs)
    if not report.max_error <= atol:
        raise AssertionError(f"not equivariant: {report} > atol={atol:.1e}")
    return report
