r"""Point clouds as graphs: the ``edge_index`` convention, scatter sums and radius graphs.

A batch of point clouds is stored as flat tensors, as in PyTorch Geometric:

* ``pos [N, 3]``: the coordinates of all ``N`` nodes of all graphs, one row per node;
* ``batch [N]``: ``batch[n]`` is the graph (``0 .. B-1``) that node ``n`` belongs to;
* ``edge_index [2, E]``: one column ``(j, i)`` per directed edge.  **Row 0 is the
  source j, row 1 is the target i, and messages flow j -> i**: the message
  computed on edge ``e`` is added into node ``edge_index[1, e]``.

A message-passing layer is then three steps: *gather* node features to edges
(``h[edge_index[0]]``, ``h[edge_index[1]]``), compute one message per edge, and
*scatter* the messages back to their targets with a sum (:func:`scatter_sum`) or
a mean (:func:`scatter_mean`).  Both are built on ``Tensor.index_add``, so memory
is ``O(E + N)``: no dense ``N x N`` matrix is ever needed.  A sum (or mean) over
the neighbours does not depend on the order in which the neighbours are listed,
which is what makes such layers equivariant to permutations of the nodes.

:func:`radius_graph` connects every pair of nodes of the same graph closer than
a cutoff, with a cell list (binning + sorting), in ``O(N log N + P)`` time and
``O(N + P)`` memory, ``P`` the number of candidate pairs in neighbouring cells.

Validation
----------
:func:`check_pos`, :func:`check_edge_index` and :func:`check_batch` raise a
``TypeError`` (wrong type or dtype) or a ``ValueError`` (wrong shape or values)
that names the argument and says what was expected.  Shape and dtype checks are
free.  *Value* checks (indices in range, batch non-negative) read one small
reduction back to the host -- one synchronisation on a GPU -- so they can be
turned off with ``validate=False``; they are also skipped automatically while
``torch.compile`` traces a function (``torch.compiler.is_compiling()``), so that
layers using them compile with ``fullgraph=True``.

>>> import torch
>>> pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
>>> radius_graph(pos, cutoff=1.5)            # only nodes 0 and 1 are closer than 1.5
tensor([[1, 0],
        [0, 1]])
>>> msg = torch.tensor([1.0, 10.0])          # one message per edge
>>> scatter_sum(msg, torch.tensor([0, 1]), dim_size=3)
tensor([ 1., 10.,  0.])
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "check_pos",
    "check_edge_index",
    "check_batch",
    "scatter_sum",
    "pool_graphs",
    "scatter_mean",
    "scatter_softmax",
    "radius_graph",
    "complete_graph",
]

_INDEX_DTYPES = (torch.int64, torch.int32)


def _is_size(n) -> bool:
    """A non-negative int (or a symbolic size, as torch.compile passes with dynamic shapes)."""
    return isinstance(n, (int, torch.SymInt)) and not isinstance(n, bool) and n >= 0


def _value_checks_enabled(validate: bool) -> bool:
    """Value checks need a host sync: skip them when asked, and while torch.compile traces."""
    return bool(validate) and not torch.compiler.is_compiling()


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------
def check_pos(pos, name: str = "pos") -> None:
    """Raise unless ``pos`` is a floating tensor of shape ``[N, 3]``.

    >>> check_pos(torch.zeros(5, 2))
    Traceback (most recent call last):
    ...
    ValueError: pos must have shape [N, 3], got [5, 2]
    """
    if not torch.is_tensor(pos):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, 3], got {type(pos).__name__}")
    if not pos.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor [N, 3], got dtype {pos.dtype}")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3], got {list(pos.shape)}")


def check_edge_index(edge_index, num_nodes: int, name: str = "edge_index", validate: bool = True) -> None:
    """Raise unless ``edge_index`` is an integer ``[2, E]`` tensor with entries in ``[0, num_nodes)``.

    The range check reads ``min`` and ``max`` back to the host (one sync, ``O(E)``
    work); ``validate=False`` skips it (shape and dtype are always checked).

    >>> check_edge_index(torch.tensor([[0, 1], [1, 2]]), num_nodes=2)
    Traceback (most recent call last):
    ...
    ValueError: edge_index has entries in [0, 2] but must lie in [0, num_nodes) = [0, 2)
    >>> check_edge_index(torch.tensor([0, 1]), num_nodes=2)
    Traceback (most recent call last):
    ...
    ValueError: edge_index must have shape [2, E], got [2]
    """
    if not torch.is_tensor(edge_index):
        raise TypeError(f"{name} must be a torch.Tensor [2, E] of int64, got {type(edge_index).__name__}")
    if edge_index.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (int64 or int32) [2, E], got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name} must have shape [2, E], got {list(edge_index.shape)}")
    if not _is_size(num_nodes):
        raise TypeError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
    if _value_checks_enabled(validate) and edge_index.numel() > 0:
        lo, hi = torch.aminmax(edge_index)  # [], []
        lo, hi = torch.stack([lo, hi]).tolist()  # one host sync
        if lo < 0 or hi >= num_nodes:
            raise ValueError(
                f"{name} has entries in [{lo}, {hi}] but must lie in [0, num_nodes) = [0, {num_nodes})"
            )


def check_batch(batch, num_nodes: int, validate: bool = True) -> None:
    """Raise unless ``batch`` is an integer ``[num_nodes]`` tensor of non-negative graph indices.

    >>> check_batch(torch.tensor([0, 0, 1]), num_nodes=4)
    Traceback (most recent call last):
    ...
    ValueError: batch must have shape [N] = [4] (one graph index per node), got [3]
    """
    if not torch.is_tensor(batch):
        raise TypeError(f"batch must be a torch.Tensor [N] of int64, got {type(batch).__name__}")
    if batch.dtype not in _INDEX_DTYPES:
        raise TypeError(f"batch must be an integer tensor (int64 or int32) [N], got dtype {batch.dtype}")
    if batch.dim() != 1 or batch.shape[0] != num_nodes:
        raise ValueError(
            f"batch must have shape [N] = [{num_nodes}] (one graph index per node), got {list(batch.shape)}"
        )
    if _value_checks_enabled(validate) and batch.numel() > 0:
        lo = int(batch.min())  # one host sync
        if lo < 0:
            raise ValueError(f"batch must hold non-negative graph indices, got min {lo}")


def _check_index(index, src, name: str = "index") -> None:
    if not torch.is_tensor(src):
        raise TypeError(f"src must be a torch.Tensor [E, ...], got {type(src).__name__}")
    if src.dim() < 1:
        raise ValueError("src must have at least one dimension [E, ...], got a scalar")
    if not torch.is_tensor(index) or index.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (int64 or int32) [E]")
    if index.dim() != 1 or index.shape[0] != src.shape[0]:
        raise ValueError(
            f"{name} must have shape [E] = [{src.shape[0]}] (one entry per row of src), got {list(index.shape)}"
        )


# ----------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------
def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    r"""``out[n] = sum_{e : index[e] = n} src[e]``, an ``[dim_size, ...]`` tensor.

    ``out = zeros.index_add(0, index, src)``: ``O(E)`` time, ``O(dim_size)`` extra
    memory, differentiable in ``src``.  Rows no index points to stay zero.
    ``index`` values must lie in ``[0, dim_size)`` (check them once with
    :func:`check_edge_index`; ``index_add`` raises on CPU, device-asserts on GPU).
    On CUDA, ``index_add`` sums in a nondeterministic order unless
    ``torch.use_deterministic_algorithms(True)`` is set.

    Args:
        src: ``[E, ...]`` values, one row per edge (or per node, when pooling).
        index: ``[E]`` integer target of each row.
        dim_size: number of output rows (e.g. the number of nodes ``N``).

    >>> scatter_sum(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([2, 0, 2]), dim_size=3)
    tensor([[2.],
            [0.],
            [5.]])
    """
    _check_index(index, src)
    if not _is_size(dim_size):
        raise TypeError(f"dim_size must be a non-negative int, got {dim_size!r}")
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))  # [dim_size, ...]
    return out.index_add(0, index, src)  # [dim_size, ...]


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    r"""``out[n] = mean_{e : index[e] = n} src[e]``; rows with no entry are zero.

    >>> scatter_mean(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([2, 0, 2]), dim_size=3)
    tensor([2.0000, 0.0000, 2.5000])
    """
    total = scatter_sum(src, index, dim_size)  # [dim_size, ...]
    ones = src.new_ones(src.shape[0])  # [E]
    count = src.new_zeros(dim_size).index_add(0, index, ones)  # [dim_size]
    count = count.clamp(min=1).reshape((dim_size,) + (1,) * (src.dim() - 1))  # [dim_size, 1, ...]
    return total / count  # [dim_size, ...]


def scatter_softmax(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    r"""Softmax over the rows that share a target: ``out[e] = exp(src[e]) / sum_{e' : index[e'] = index[e]} exp(src[e'])``.

    ``[E, ...] -> [E, ...]``, separately for every trailing entry (e.g. one softmax per
    attention head for ``src [E, H]``).  With ``index = edge_index[1]`` this normalises
    the logits of each node's *incoming* edges, as attention over a graph needs; the rows
    of one target sum to 1.

    Numerically stable: the per-target maximum ``m_n = max_{e : index[e] = n} src[e]``
    (``scatter_reduce(..., "amax")``) is subtracted before ``exp``, so the largest term is
    ``exp(0) = 1`` and nothing overflows (logits of ``1e4`` are fine).  The maximum is
    *detached*: the softmax does not depend on it (:math:`\mathrm{softmax}(s - c) =
    \mathrm{softmax}(s)`), so no gradient needs to flow through it.  Targets without rows
    get nothing (no NaN); a target whose logits are all ``-inf`` gets weights ``0``.

    Args:
        src: ``[E, ...]`` floating logits.
        index: ``[E]`` integer target of each row, in ``[0, dim_size)``.
        dim_size: number of targets (e.g. the number of nodes ``N``).

    >>> logits = torch.tensor([1.0, 2.0, 1e4, 3.0])
    >>> scatter_softmax(logits, torch.tensor([0, 0, 1, 1]), dim_size=3)   # two edges into node 0, two into node 1
    tensor([0.2689, 0.7311, 1.0000, 0.0000])
    """
    _check_index(index, src)
    if not _is_size(dim_size):
        raise TypeError(f"dim_size must be a non-negative int, got {dim_size!r}")
    if not src.is_floating_point():
        raise TypeError(f"src must be a floating-point tensor [E, ...], got dtype {src.dtype}")
    idx = index.reshape((-1,) + (1,) * (src.dim() - 1)).expand_as(src)  # [E, ...]
    s = src.detach()  # [E, ...]
    m = s.new_zeros((dim_size,) + tuple(src.shape[1:])).scatter_reduce(
        0, idx, s, "amax", include_self=False)  # [dim_size, ...]  per-target max (0 where no row)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf -> 0 (exp gives 0, no NaN)
    e = torch.exp(src - m.gather(0, idx))  # [E, ...]  <= 1
    den = scatter_sum(e, index, dim_size)  # [dim_size, ...]  >= 1 unless all -inf
    den = torch.where(den > 0, den, torch.ones_like(den))  # [dim_size, ...]
    return e / den.gather(0, idx)  # [E, ...]


def pool_graphs(y: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None,
                reduce: str = "sum", validate: bool = True) -> torch.Tensor:
    """Per-graph sum (or mean) of node values: ``y [N, ...]``, ``batch [N]`` -> ``[num_graphs, ...]``.

    ``num_graphs`` defaults to ``batch.max() + 1`` (one host sync; pass it under ``torch.compile``);
    a given ``num_graphs`` not above ``batch.max()`` is a ``ValueError`` (checked outside compile
    and when ``validate``; the check is one host sync).  Graphs without nodes get 0.  Used by the
    readouts of :class:`~minequi.EGNN`, :class:`~minequi.TensorFieldNetwork` and
    :class:`~minequi.SE3Transformer`.

    >>> pool_graphs(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([0, 0, 1]), reduce="mean")
    tensor([[1.5000],
            [4.0000]])
    """
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() > 0 else 0  # one host sync
    elif _value_checks_enabled(validate) and batch.numel() > 0 and int(batch.max()) >= num_graphs:
        raise ValueError(f"num_graphs={num_graphs} but batch holds graph index {int(batch.max())}; "
                         f"num_graphs must exceed batch.max()")
    aggregate = scatter_mean if reduce == "mean" else scatter_sum
    return aggregate(y, batch, num_graphs)  # [num_graphs, ...]


# ----------------------------------------------------------------------------
# Radius graph with a cell list
# ----------------------------------------------------------------------------
_MAX_KEY = 2**62  # cell keys are int64: keep (graphs x cells) below this


def radius_graph(
    pos: torch.Tensor,
    cutoff: float,
    batch: torch.Tensor | None = None,
    loop: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    r"""All directed edges ``j -> i`` between nodes of the same graph with ``|x_i - x_j| < cutoff``.

    Returns ``edge_index [2, E]`` (int64, on ``pos.device``), row 0 the source ``j``,
    row 1 the target ``i``, both directions of every pair present, columns sorted
    by ``(i, j)`` (so the output is deterministic and does not depend on the order
    of the candidate search).  ``loop=True`` adds the self-edges ``i -> i``.  Unlike
    PyTorch Geometric's ``radius_graph`` there is no ``max_num_neighbors``
    truncation: every pair within the cutoff is returned.

    Algorithm (a *cell list*): cut space into cubes of side ``s >= cutoff``; two
    points closer than ``cutoff`` lie in the same or in adjacent cubes.  Give every
    node the integer key of its (graph, cube), sort the keys, and for each node
    look up, with ``searchsorted``, the nodes of the 27 cubes around its own; keep
    the candidate pairs closer than the cutoff.  Cost ``O(N log N + P)`` time and
    ``O(N + P)`` memory, ``P`` the number of candidates (``27/(4 pi/3) ~ 6.4``
    times the number of edges for a uniform density; at most the sum over graphs
    of ``n_g^2``): graphs never see each other, and no ``N x N`` matrix is formed.
    Geometry is done in float64 on a detached copy of ``pos`` (the graph is a
    discrete choice, not differentiable); it reads three numbers back to the host
    and the output size is data-dependent, so this function is not meant for
    ``torch.compile(fullgraph=True)`` -- build the graph outside the compiled model.

    Args:
        pos: ``[N, 3]`` coordinates (finite).
        cutoff: positive radius (strict inequality).
        batch: optional ``[N]`` graph index of each node (any order); ``None`` = one graph.
        loop: include the self-edges ``i -> i``.
        validate: check the values of ``batch`` (one host sync).

    >>> pos = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0.0, 0, 0], [0.5, 0, 0]])
    >>> radius_graph(pos, 1.0, batch=torch.tensor([0, 0, 1, 1]))   # two graphs, no cross edges
    tensor([[1, 0, 3, 2],
            [0, 1, 2, 3]])
    >>> radius_graph(pos[:2], 1.0, loop=True)
    tensor([[0, 1, 0, 1],
            [0, 0, 1, 1]])
    """
    check_pos(pos)
    if isinstance(cutoff, torch.Tensor):
        cutoff = float(cutoff)
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not (0 < cutoff < math.inf):
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff!r}")
    N = pos.shape[0]
    device = pos.device
    if batch is None:
        batch = torch.zeros(N, dtype=torch.int64, device=device)  # [N]
    else:
        check_batch(batch, N, validate=validate)
        batch = batch.to(device=device, dtype=torch.int64)  # [N]
    if N == 0:
        return torch.zeros(2, 0, dtype=torch.int64, device=device)  # [2, 0]

    p = pos.detach().to(torch.float64)  # [N, 3]
    lo = p.min(dim=0).values  # [3]
    hi = p.max(dim=0).values  # [3]
    stats = torch.cat([lo, hi, batch.max().to(torch.float64).reshape(1)]).tolist()  # one host sync
    if not all(math.isfinite(v) for v in stats[:6]):
        raise ValueError("pos must be finite (found NaN or inf)")
    num_graphs = int(stats[6]) + 1
    extent = max(stats[3] - stats[0], stats[4] - stats[1], stats[5] - stats[2])

    # Cube side: the cutoff, unless the (graph, cube) keys would overflow int64;
    # then larger cubes (still >= cutoff, so no pair is missed, only more candidates).
    max_cells = int((_MAX_KEY / num_graphs) ** (1.0 / 3.0)) - 3
    if max_cells < 1:
        raise ValueError(f"too many graphs ({num_graphs}) for int64 cell keys")
    side = max(cutoff, extent / max_cells) * (1.0 + 1e-9)
    cell = torch.floor((p - lo) / side).to(torch.int64) + 1  # [N, 3], in [1, D]
    D = int(extent / side) + 3  # cells per axis, with one empty layer on each side
    key = ((batch * D + cell[:, 0]) * D + cell[:, 1]) * D + cell[:, 2]  # [N]

    # Sort the nodes by key; the nodes of one cube are then a contiguous range.
    key_sorted, order = torch.sort(key, stable=True)  # [N], [N]
    r = torch.arange(-1, 2, device=device)  # [3]
    shifts = torch.cartesian_prod(r, r, r)  # [27, 3]
    offset = (shifts[:, 0] * D + shifts[:, 1]) * D + shifts[:, 2]  # [27]
    nb_key = key[:, None] + offset[None, :]  # [N, 27] keys of the neighbouring cubes
    start = torch.searchsorted(key_sorted, nb_key, side="left")  # [N, 27]
    count = torch.searchsorted(key_sorted, nb_key, side="right") - start  # [N, 27]

    # Expand each (node i, cube) range into its candidate pairs (i, j).
    start, count = start.reshape(-1), count.reshape(-1)  # [27 N], [27 N]
    seg = torch.repeat_interleave(torch.arange(count.numel(), device=device), count)  # [P] (host sync)
    first = torch.cumsum(count, 0) - count  # [27 N] position of each range in the pair list
    rank = torch.arange(seg.numel(), device=device) - first[seg]  # [P] position inside the range
    i = torch.div(seg, 27, rounding_mode="floor")  # [P] target
    j = order[start[seg] + rank]  # [P] source

    d2 = (p[i] - p[j]).square().sum(dim=-1)  # [P]
    keep = d2 < cutoff * cutoff  # [P]
    if not loop:
        keep = keep & (i != j)
    i, j = i[keep], j[keep]  # [E], [E]
    perm = torch.argsort(i * N + j)  # [E] sort by (target, source)
    return torch.stack([j[perm], i[perm]])  # [2, E]


def complete_graph(
    num_nodes: int,
    batch: torch.Tensor | None = None,
    loop: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Every directed edge ``j -> i`` between two nodes of the same graph (a fully connected graph).

    The graph of the EGNN paper's n-body model and of egnn-pytorch's dense form: each of the
    ``n_g (n_g - 1)`` ordered pairs of every graph ``g`` (``n_g^2`` with ``loop=True``).  Returns
    ``edge_index [2, E]`` (int64), row 0 the source ``j``, row 1 the target ``i``, columns sorted by
    ``(i, j)`` as :func:`radius_graph`'s (it equals ``radius_graph`` with an infinite cutoff).
    ``O(sum_g n_g^2)`` time and memory: meant for small graphs.

    Args:
        num_nodes: ``N``, the number of nodes (all graphs together).
        batch: optional ``[N]`` graph index of each node (any order); ``None`` = one graph.
        loop: include the self-edges ``i -> i``.
        device: where to build the edges (default: ``batch``'s device, else the CPU).

    >>> complete_graph(3)
    tensor([[1, 2, 0, 2, 0, 1],
            [0, 0, 1, 1, 2, 2]])
    >>> complete_graph(4, batch=torch.tensor([0, 1, 0, 1]))   # two graphs of two nodes
    tensor([[2, 3, 0, 1],
            [0, 1, 2, 3]])
    """
    try:
        if isinstance(num_nodes, bool):
            raise TypeError
        num_nodes = num_nodes.__index__()  # int, numpy integer or 0-d integer tensor -> int
    except (TypeError, AttributeError, RuntimeError):
        raise TypeError(f"num_nodes must be a non-negative int, got {type(num_nodes).__name__} {num_nodes!r}") from None
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes}")
    if batch is None:
        device = torch.device("cpu") if device is None else torch.device(device)
        batch = torch.zeros(num_nodes, dtype=torch.int64, device=device)  # [N]
    else:
        check_batch(batch, num_nodes)
        batch = batch.to(device=batch.device if device is None else device, dtype=torch.int64)  # [N]
    device = batch.device
    if num_nodes == 0:
        return torch.zeros(2, 0, dtype=torch.int64, device=device)  # [2, 0]
    order = torch.argsort(batch, stable=True)  # [N] nodes grouped by graph, index order within a graph
    size = torch.bincount(batch)  # [G] n_g
    first = torch.cumsum(size, 0) - size  # [G] position of each graph's first node in `order`
    deg = size[batch]  # [N] n_g of each node's graph: its number of sources
    dst = torch.repeat_interleave(torch.arange(num_nodes, device=device), deg)  # [sum n_g^2] targets i
    start = torch.cumsum(deg, 0) - deg  # [N] first edge of each target
    rank = torch.arange(dst.shape[0], device=device) - start[dst]  # [sum n_g^2] 0 .. n_g - 1 per target
    src = order[first[batch[dst]] + rank]  # [sum n_g^2] sources j: the nodes of the target's graph
    if not loop:
        keep = src != dst  # [sum n_g^2]
        src, dst = src[keep], dst[keep]  # [E], [E]
    return torch.stack([src, dst])  # [2, E]
