"""Normalised adjacency and symmetric sparse products against dense references."""

from __future__ import annotations

import pytest
import torch

from freqd.graph import bipartite_edge_index, normalized_adjacency, sym_spmm
from freqd.testing import dense_bipartite_adjacency


@pytest.mark.parametrize("n_users, n_items, n_edges, seed", [(4, 3, 5, 0), (20, 30, 60, 1), (50, 10, 120, 2)])
def test_bipartite_adjacency_matches_dense(n_users, n_items, n_edges, seed):
    g = torch.Generator().manual_seed(seed)
    # ids start at 1: user 0 and item 0 are RecBole's padding, with no edges.
    users = torch.randint(1, n_users, (n_edges,), generator=g)
    items = torch.randint(1, n_items, (n_edges,), generator=g)
    edge_index = bipartite_edge_index(users, items, n_users)
    adj = normalized_adjacency(edge_index, n_users + n_items).to_dense().double()
    expected = dense_bipartite_adjacency(users, items, n_users, n_items)
    torch.testing.assert_close(adj, expected, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(adj).all()
    assert adj[0].abs().sum() == 0 and adj[:, n_users].abs().sum() == 0  # padding rows stay zero
    torch.testing.assert_close(adj, adj.T)


def test_hand_written_path_graph():
    # user 1 - item 1 - user 2 (n_users=3 incl. padding, n_items=2): degrees 1, 2, 1.
    edge_index = bipartite_edge_index(torch.tensor([1, 2]), torch.tensor([1, 1]), 3)
    adj = normalized_adjacency(edge_index, 5).to_dense()
    expected = torch.zeros(5, 5)
    expected[1, 4] = expected[4, 1] = expected[2, 4] = expected[4, 2] = 1 / 2**0.5
    torch.testing.assert_close(adj, expected)


def test_sym_spmm_value_and_gradient_match_dense():
    g = torch.Generator().manual_seed(3)
    edge_index = bipartite_edge_index(torch.randint(0, 6, (15,), generator=g), torch.randint(0, 5, (15,), generator=g), 6)
    adj = normalized_adjacency(edge_index, 11)
    x = torch.randn(11, 4, generator=g, requires_grad=True)
    weight = torch.randn(11, 4, generator=g)
    (sym_spmm(adj, x) * weight).sum().backward()
    sparse_grad = x.grad.clone()
    x.grad = None
    dense = adj.to_dense()
    out = dense @ x
    (out * weight).sum().backward()
    torch.testing.assert_close(sym_spmm(adj, x), out)
    torch.testing.assert_close(sparse_grad, x.grad)
