"""Small random graphs shared by the graph tests: bipartite, user–user and item–item top-K."""

from __future__ import annotations

import numpy as np
import torch

from freqd.graph import bipartite_edge_index, cooccurrence_adjacency, normalized_adjacency

GRAPHS = [("bipartite", s) for s in range(3)] + [("user", s) for s in range(2)] + [("item", s) for s in range(2)]


def random_pairs(seed: int, n_users: int, n_items: int, n_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random interactions; user 0 and item 0 are padding (no interactions)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, n_users, (n_pairs,), generator=g), torch.randint(1, n_items, (n_pairs,), generator=g)


def make_graph(kind: str, seed: int) -> torch.Tensor:
    """Normalised float64 CSR adjacency with 5–50 nodes: bipartite, user–user or item–item top-K."""
    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(4, 20)), int(rng.integers(4, 25))
    users, items = random_pairs(seed, n_users, n_items, int(rng.integers(8, 60)))
    if kind == "bipartite":
        edge_index = bipartite_edge_index(users, items, n_users)
        weight = torch.ones(edge_index.shape[1], dtype=torch.float64)
        return normalized_adjacency(edge_index, n_users + n_items, weight)
    k = int(rng.integers(1, 4))
    return cooccurrence_adjacency(users, items, n_users, n_items, k=k, side=kind, dtype=torch.float64)
