"""Tests of minequi.graph: input checks, scatter aggregation, radius graphs."""
import numpy as np
import pytest
import torch

from minequi.graph import (
    check_batch,
    check_edge_index,
    check_pos,
    complete_graph,
    radius_graph,
    scatter_mean,
    scatter_sum,
)
from minequi.testing import equivariance_error, permutation_sampler


# ----------------------------------------------------------------------------- reference
def brute_force_radius_graph(pos, cutoff, batch=None, loop=False):
    """All (j, i) with |x_i - x_j| < cutoff in the same graph, by an explicit double loop in numpy."""
    pos = np.asarray(pos, dtype=np.float64)
    n = len(pos)
    batch = np.zeros(n, dtype=np.int64) if batch is None else np.asarray(batch)
    edges = []
    for i in range(n):
        for j in range(n):
            if batch[i] != batch[j] or (i == j and not loop):
                continue
            if np.sqrt(((pos[i] - pos[j]) ** 2).sum()) < cutoff:
                edges.append((j, i))
    edges.sort(key=lambda e: (e[1], e[0]))  # by target, then source
    return np.array(edges, dtype=np.int64).reshape(-1, 2).T  # [2, E]


def random_batch(sizes, gen, scale=2.0, dtype=torch.float64):
    pos = scale * torch.randn(sum(sizes), 3, generator=gen, dtype=dtype)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, batch


# ----------------------------------------------------------------------------- radius graph
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("sizes,cutoff", [([40], 1.5), ([7, 1, 30, 12], 2.0), ([25, 25], 0.8), ([20], 100.0)])
def test_radius_graph_matches_brute_force(sizes, cutoff, loop):
    gen = torch.Generator().manual_seed(len(sizes) * 100 + int(10 * cutoff))
    pos, batch = random_batch(sizes, gen)
    ei = radius_graph(pos, cutoff, batch=batch, loop=loop)
    ref = brute_force_radius_graph(pos.numpy(), cutoff, batch.numpy(), loop=loop)
    assert ei.dtype == torch.int64 and ei.shape == (2, ref.shape[1])
    np.testing.assert_array_equal(ei.numpy(), ref)
    assert ref.shape[1] > 0


def test_radius_graph_unsorted_batch_and_float32():
    """Graph labels in any order and float32 positions give the brute-force graph."""
    gen = torch.Generator().manual_seed(3)
    pos = torch.randn(60, 3, generator=gen)  # float32
    batch = torch.randint(0, 4, (60,), generator=gen)
    ei = radius_graph(pos, 1.0, batch=batch)
    ref = brute_force_radius_graph(pos.double().numpy(), 1.0, batch.numpy())
    np.testing.assert_array_equal(ei.numpy(), ref)


def test_radius_graph_far_apart_and_overlapping_graphs():
    """Graphs that overlap in space never connect; widely spread points with a tiny cutoff
    (more cells than int64 keys allow, so the cell side grows) still give the exact graph."""
    gen = torch.Generator().manual_seed(4)
    pos = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    pos = torch.cat([pos, pos + 1e-3])  # graph 1 = graph 0 shifted by 1e-3
    batch = torch.repeat_interleave(torch.arange(2), 30)
    ei = radius_graph(pos, 0.8, batch=batch)
    np.testing.assert_array_equal(ei.numpy(), brute_force_radius_graph(pos.numpy(), 0.8, batch.numpy()))

    spread = torch.cat([torch.randn(20, 3, generator=gen, dtype=torch.float64) * 1e7,
                        torch.randn(20, 3, generator=gen, dtype=torch.float64) * 1e-4])
    ei = radius_graph(spread, 1e-4)
    np.testing.assert_array_equal(ei.numpy(), brute_force_radius_graph(spread.numpy(), 1e-4))
    assert ei.shape[1] > 0


def test_radius_graph_is_symmetric_and_within_cutoff():
    gen = torch.Generator().manual_seed(5)
    pos = torch.randn(100, 3, generator=gen, dtype=torch.float64)
    ei = radius_graph(pos, 1.0)
    j, i = ei
    assert bool(((pos[i] - pos[j]).norm(dim=-1) < 1.0).all()) and bool((i != j).all())
    pairs = set(zip(j.tolist(), i.tolist()))
    assert pairs == {(b, a) for a, b in pairs}


def test_radius_graph_is_permutation_equivariant():
    """Relabelling the nodes relabels the edges: the *set* of edges maps over."""
    gen = torch.Generator().manual_seed(6)
    pos, batch = random_batch([15, 20], gen)
    perm = torch.randperm(35, generator=gen)
    inv = torch.argsort(perm)
    e1 = radius_graph(pos, 1.5, batch)
    e2 = radius_graph(pos[perm], 1.5, batch[perm])  # node k of the new cloud is node perm[k]
    assert set(map(tuple, e1.T.tolist())) == set(map(tuple, perm[e2].T.tolist()))
    assert not torch.equal(inv, perm)


def test_radius_graph_empty():
    assert radius_graph(torch.zeros(0, 3), 1.0).shape == (2, 0)
    assert radius_graph(torch.zeros(0, 3), 1.0, batch=torch.zeros(0, dtype=torch.long), loop=True).shape == (2, 0)
    far = torch.tensor([[0.0, 0, 0], [10.0, 0, 0]])
    assert radius_graph(far, 1.0).shape == (2, 0)
    assert radius_graph(far, 1.0, loop=True).tolist() == [[0, 1], [0, 1]]
    assert radius_graph(far[:1], 1.0).shape == (2, 0)


def test_radius_graph_bad_input():
    pos = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"pos must have shape \[N, 3\]"):
        radius_graph(torch.zeros(4, 2), 1.0)
    with pytest.raises(TypeError, match="pos must be a floating-point"):
        radius_graph(torch.zeros(4, 3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="cutoff must be a positive"):
        radius_graph(pos, 0.0)
    with pytest.raises(ValueError, match="cutoff must be a positive"):
        radius_graph(pos, float("nan"))
    with pytest.raises(ValueError, match=r"batch must have shape \[N\] = \[4\]"):
        radius_graph(pos, 1.0, batch=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="batch must be an integer"):
        radius_graph(pos, 1.0, batch=torch.zeros(4))
    with pytest.raises(ValueError, match="non-negative"):
        radius_graph(pos, 1.0, batch=torch.tensor([0, 0, -1, 0]))
    with pytest.raises(ValueError, match="finite"):
        radius_graph(torch.tensor([[0.0, 0, float("nan")]]), 1.0)


# ----------------------------------------------------------------------------- complete graph
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("sizes", [[1], [5], [7, 1, 3, 12], [4, 4, 4]])
def test_complete_graph_is_radius_graph_with_infinite_cutoff(sizes, loop):
    gen = torch.Generator().manual_seed(len(sizes))
    pos, batch = random_batch(sizes, gen)
    perm = torch.randperm(len(batch), generator=gen)  # unsorted batch
    pos, batch = pos[perm], batch[perm]
    got = complete_graph(len(batch), batch, loop=loop)
    np.testing.assert_array_equal(got.numpy(), brute_force_radius_graph(pos, 1e9, batch, loop))
    assert got.shape[1] == sum(n * (n - 1 + loop) for n in sizes)
    torch.testing.assert_close(got, radius_graph(pos, 1e6, batch, loop=loop), rtol=0, atol=0)


def test_complete_graph_equals_the_meshgrid_construction():
    """The disjoint complete graphs the n-body chapter builds by hand: same edges, same order."""
    S, n = 6, 5
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    offset = n * torch.arange(S)[:, None]  # [S, 1]
    for loop in (False, True):
        keep = torch.ones(n, n, dtype=torch.bool) if loop else i != j
        ref = torch.stack([(j[keep] + offset).reshape(-1), (i[keep] + offset).reshape(-1)])
        got = complete_graph(S * n, torch.arange(S).repeat_interleave(n), loop=loop)
        assert torch.equal(got, ref)
    # negative control: the same pairs in another order are not equal
    assert not torch.equal(complete_graph(S * n, torch.arange(S).repeat_interleave(n)).flip(1), ref[:, ref[0] != ref[1]])


def test_complete_graph_empty_device_and_bad_input():
    assert complete_graph(0).shape == (2, 0)
    assert complete_graph(0, torch.zeros(0, dtype=torch.long), loop=True).shape == (2, 0)
    assert complete_graph(1).shape == (2, 0) and complete_graph(1, loop=True).tolist() == [[0], [0]]
    assert complete_graph(3, device="cpu").dtype == torch.int64
    with pytest.raises(ValueError, match="num_nodes must be a non-negative int"):
        complete_graph(-1)
    with pytest.raises(TypeError, match="num_nodes must be a non-negative int"):
        complete_graph(2.0)
    with pytest.raises(TypeError, match="num_nodes must be a non-negative int"):
        complete_graph(True)
    assert torch.equal(complete_graph(np.int64(3)), complete_graph(3))
    with pytest.raises(ValueError, match=r"batch must have shape \[N\] = \[4\]"):
        complete_graph(4, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="batch must be an integer"):
        complete_graph(2, torch.zeros(2))
    with pytest.raises(ValueError, match="non-negative"):
        complete_graph(2, torch.tensor([0, -1]))


# ----------------------------------------------------------------------------- checks
def test_check_edge_index():
    check_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
    check_edge_index(torch.zeros(2, 0, dtype=torch.long), 0)
    check_edge_index(torch.tensor([[0, 1], [1, 0]], dtype=torch.int32), 2)
    with pytest.raises(TypeError, match="edge_index must be an integer"):
        check_edge_index(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 2)
    with pytest.raises(TypeError, match="edge_index must be a torch.Tensor"):
        check_edge_index([[0, 1], [1, 0]], 2)
    with pytest.raises(ValueError, match=r"must have shape \[2, E\], got \[3, 2\]"):
        check_edge_index(torch.zeros(3, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"entries in \[0, 2\]"):
        check_edge_index(torch.tensor([[0, 2], [1, 0]]), 2)
    with pytest.raises(ValueError, match=r"entries in \[-1, 1\]"):
        check_edge_index(torch.tensor([[0, -1], [1, 0]]), 2, name="edges")
    check_edge_index(torch.tensor([[0, 5], [1, 0]]), 2, validate=False)  # value check skipped on request


def test_check_pos_and_batch():
    check_pos(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\], got \[3\]"):
        check_pos(torch.zeros(3), name="x")
    with pytest.raises(TypeError):
        check_pos(np.zeros((3, 3)))
    check_batch(torch.zeros(5, dtype=torch.long), 5)
    with pytest.raises(ValueError, match=r"batch must have shape \[N\] = \[5\]"):
        check_batch(torch.zeros(5, 1, dtype=torch.long), 5)
    check_batch(torch.tensor([0, -1]), 2, validate=False)


# ----------------------------------------------------------------------------- scatter
def test_scatter_sum_and_mean_against_loops():
    gen = torch.Generator().manual_seed(7)
    src = torch.randn(50, 4, 2, generator=gen, dtype=torch.float64)
    index = torch.randint(0, 9, (50,), generator=gen)
    index[index == 3] = 4  # leave node 3 empty
    s, m = scatter_sum(src, index, 10), scatter_mean(src, index, 10)
    assert s.shape == m.shape == (10, 4, 2)
    for n in range(10):
        rows = src[index == n]
        torch.testing.assert_close(s[n], rows.sum(0), rtol=0, atol=1e-14)
        want = rows.mean(0) if len(rows) else torch.zeros(4, 2, dtype=torch.float64)
        torch.testing.assert_close(m[n], want, rtol=0, atol=1e-14)
    assert s[3].abs().max() == 0 and m[3].abs().max() == 0


def test_scatter_empty_gradients_dtypes():
    assert scatter_sum(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 3).shape == (3, 5)
    assert scatter_mean(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 0).shape == (0, 5)
    src = torch.randn(6, 3, dtype=torch.float32, requires_grad=True)
    out = scatter_mean(src, torch.tensor([0, 0, 1, 1, 1, 2]), 3)
    assert out.dtype == torch.float32
    out.sum().backward()
    torch.testing.assert_close(src.grad, torch.tensor([1 / 2] * 2 + [1 / 3] * 3 + [1.0])[:, None].expand(6, 3))


def test_scatter_bad_input():
    with pytest.raises(ValueError, match=r"index must have shape \[E\] = \[4\]"):
        scatter_sum(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="index must be an integer"):
        scatter_sum(torch.zeros(4, 2), torch.zeros(4), 2)
    with pytest.raises(TypeError, match="dim_size"):
        scatter_sum(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), -1)


# ----------------------------------------------------------------------------- permutations
def message_passing(aggregate):
    """One message-passing step on a radius graph, with a chosen aggregation; maps (pos, h) -> h'."""
    W = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(pos, h):
        ei = radius_graph(pos, 1.5)
        j, i = ei
        msg = torch.tanh(h[j] @ W) * (pos[i] - pos[j]).norm(dim=-1, keepdim=True)  # [E, 5]
        return h + aggregate(msg, i, h.shape[0])

    return f


def concat_in_node_order(msg, i, n, k=3):
    """Order-dependent 'aggregation': the first k messages of each node, concatenated, then mixed
    with position-dependent weights (what a dense layer on a padded neighbour list does)."""
    out = msg.new_zeros(n, msg.shape[1])
    w = torch.arange(1, k + 1, dtype=msg.dtype)
    for node in range(n):
        rows = msg[i == node][:k]
        out[node] = (w[: len(rows), None] * rows).sum(0)
    return out


@pytest.mark.parametrize("aggregate,equivariant", [(scatter_sum, True), (scatter_mean, True), (concat_in_node_order, False)])
def test_aggregation_permutation_equivariance(aggregate, equivariant):
    gen = torch.Generator().manual_seed(8)
    pos = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    h = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    err = equivariance_error(
        message_passing(aggregate), (pos, h), permutation_sampler(30),
        act_in=lambda p, a: (a[0][p], a[1][p]), act_out=lambda p, y: y[p], n_samples=4,
    )
    if equivariant:
        assert err < 1e-12, err
    else:
        assert err > 1e-2, err  # negative control: order of the neighbour list matters
