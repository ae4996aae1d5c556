"""Batch-local filtering (spec §11) against full products, and edge dropout (spec §7.2), in float64."""

from __future__ import annotations

import pytest
import torch
from graph_cases import GRAPHS, make_graph

from freqd.graph import (
    PolynomialFilter,
    edge_dropout,
    filter_rows,
    k_hop,
)

F = PolynomialFilter
FILTERS = {
    "fo0.5": F.first_order(0.5),
    "fo-0.2": F.first_order(-0.2),
    "fo0": F.first_order(0.0),
    "so0.3": F.second_order(0.3),
    "quad": F.quadratic(1.0, -0.8, 0.15),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def batch_rows(n: int, seed: int) -> torch.Tensor:
    """A few rows with duplicates, unsorted, always including the padding node 0."""
    g = torch.Generator().manual_seed(200 + seed)
    return torch.cat([torch.randint(0, n, (max(2, n // 4),), generator=g), torch.tensor([0, 0])]).flip(0)


def dense_k_hop(adj: torch.Tensor, rows: torch.Tensor, hops: int) -> list[torch.Tensor]:
    pattern = adj.to_dense() != 0
    sets = [torch.unique(rows)]
    for _ in range(hops):
        mask = torch.zeros(adj.shape[0], dtype=torch.bool)
        mask[sets[-1]] = True
        mask |= pattern[sets[-1]].any(0)
        sets.append(mask.nonzero().flatten())
    return sets


@pytest.mark.parametrize("kind, seed", GRAPHS)
def test_k_hop_matches_dense(kind, seed):
    adj = make_graph(kind, seed)
    rows = batch_rows(adj.shape[0], seed)
    got = k_hop(adj, rows, 3)
    assert len(got) == 4
    for a, b in zip(got, dense_k_hop(adj, rows, 3)):
        assert torch.equal(a, b)
    assert torch.equal(k_hop(adj, rows.tolist(), 0)[0], torch.unique(rows))
    with pytest.raises(ValueError):
        k_hop(adj, rows, -1)


@pytest.mark.parametrize("method", ["scatter", "csr"])
@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("kind, seed", GRAPHS)
def test_filter_rows_dense_table_matches_full_product(kind, seed, name, method):
    filt = FILTERS[name]
    adj = make_graph(kind, seed)
    x = torch.randn(adj.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    rows = batch_rows(adj.shape[0], seed)
    local, stats = filter_rows(adj, filt, rows, x, return_stats=True, method=method)
    torch.testing.assert_close(local, filt.apply(adj, x)[rows], rtol=1e-12, atol=1e-13)
    sets = k_hop(adj, rows, filt.order)
    assert stats["hop_sizes"] == [s.numel() for s in sets] and stats["table_rows"] == sets[-1].numel()
    crow = adj.crow_indices()
    assert stats["nnz"] == sum(int((crow[s + 1] - crow[s]).sum()) for s in sets[:-1])
    assert stats["adj_rows"] == sum(s.numel() for s in sets[:-1])


@pytest.mark.parametrize("method", ["scatter", "csr"])
@pytest.mark.parametrize("name", ["fo0.5", "so0.3", "quad"])
@pytest.mark.parametrize("kind, seed", GRAPHS)
def test_filter_rows_callable_called_once_on_k_hop_set_and_gradients_match(kind, seed, name, method):
    filt = FILTERS[name]
    adj = make_graph(kind, seed)
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(adj.shape[0], 3, dtype=torch.float64, generator=g, requires_grad=True)
    proj = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).double()
    upstream = torch.randn(len(batch_rows(adj.shape[0], seed)), 4, dtype=torch.float64, generator=g)
    rows = batch_rows(adj.shape[0], seed)
    calls: list[torch.Tensor] = []

    def table(ids: torch.Tensor) -> torch.Tensor:
        calls.append(ids.clone())
        return proj(student[ids])

    local = filter_rows(adj, filt, rows, table, method=method)
    assert len(calls) == 1 and torch.equal(calls[0], k_hop(adj, rows, filt.order)[-1])
    (local * upstream).sum().backward()
    local_grads = [student.grad.clone()] + [p.grad.clone() for p in proj.parameters()]
    student.grad = None
    proj.zero_grad(set_to_none=True)
    full = filt.apply(adj, proj(student))[rows]
    torch.testing.assert_close(local, full, rtol=1e-12, atol=1e-13)
    (full * upstream).sum().backward()
    for got, want in zip(local_grads, [student.grad] + [p.grad for p in proj.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("kind, seed", GRAPHS[::2])
def test_filter_rows_padding_row_and_order_zero(kind, seed):
    adj = make_graph(kind, seed)
    x = torch.randn(adj.shape[0], 2, dtype=torch.float64)
    filt = F.second_order(0.4)
    out = filter_rows(adj, filt, torch.tensor([0, 0]), x)
    torch.testing.assert_close(out, (filt.response(1.0) * x[0]).expand(2, 2))
    calls = []
    identity = filter_rows(adj, F.first_order(0.0), [3, 1], lambda ids: calls.append(ids) or x[ids])
    assert torch.equal(identity, x[[3, 1]]) and torch.equal(calls[0], torch.tensor([1, 3]))


@pytest.mark.parametrize("name", ["fo0.5", "so0.3", "quad"])
@pytest.mark.parametrize("kind, seed", GRAPHS[::2])
def test_filter_rows_dropout_uses_one_consistent_dropped_matrix(kind, seed, name):
    filt = FILTERS[name]
    adj = make_graph(kind, seed)
    x = torch.randn(adj.shape[0], 3, dtype=torch.float64)
    rows = batch_rows(adj.shape[0], seed)
    calls = []
    out, stats = filter_rows(
        adj, filt, rows, lambda ids: calls.append(ids) or x[ids], keep_prob=0.5,
        generator=torch.Generator().manual_seed(seed), return_stats=True,
    )
    dropped = stats["adjacency"]
    torch.testing.assert_close(out, filt.apply(dropped, x)[rows], rtol=1e-12, atol=1e-13)
    assert torch.equal(calls[0], k_hop(dropped, rows, filt.order)[-1])  # neighbours after dropout
    dense, kept = adj.to_dense(), dropped.to_dense()
    mask = kept != 0
    torch.testing.assert_close(kept[mask], dense[mask] / 0.5)
    again = filter_rows(adj, filt, rows, x, keep_prob=0.5, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(again, out)
    with pytest.raises(ValueError, match="keep_prob"):
        filter_rows(adj, filt, rows, x, keep_prob=0.0)


# --- edge dropout ---------------------------------------------------------------------------------


def test_edge_dropout_identity_at_keep_prob_one():
    adj = make_graph("bipartite", 0)
    assert edge_dropout(adj, 1.0) is adj


@pytest.mark.parametrize("kind", ["bipartite", "user"])
def test_edge_dropout_survivors_scaled_and_unbiased(kind):
    adj = make_graph(kind, 1)
    dense = adj.to_dense()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        dropped = edge_dropout(adj, 0.5, generator=g)
        assert dropped.layout == torch.sparse_csr and dropped.values().numel() < adj.values().numel()
        d = dropped.to_dense()
        mask = d != 0
        torch.testing.assert_close(d[mask], dense[mask] / 0.5)
        assert not (mask & (dense == 0)).any()
    draws = 500
    mean = sum(edge_dropout(adj, 0.5, generator=g).to_dense() for _ in range(draws)) / draws
    std = dense / draws**0.5  # per-entry std of the mean at p = 1/2
    assert ((mean - dense).abs() <= 5 * std).all()


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan")])
def test_edge_dropout_rejects_invalid_keep_prob(p):
    with pytest.raises(ValueError, match="keep_prob"):
        edge_dropout(make_graph("user", 0), p)
