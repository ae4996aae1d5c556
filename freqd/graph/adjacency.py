"""User–item graphs as torch sparse CSR tensors, built with torch-geometric."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor


def bipartite_edge_index(users: Tensor, items: Tensor, n_users: int) -> Tensor:
    """Both directions of every distinct (user, item) interaction; item j is node ``n_users + j``.

    A repeated pair is one edge (R is 0/1, as in RecBole's LightGCN adjacency), not an edge of weight 2.
    """
    users = torch.as_tensor(users, dtype=torch.long)
    items = torch.as_tensor(items, dtype=torch.long)
    pairs = torch.unique(torch.stack([users, items]), dim=1)
    users, items = pairs[0], pairs[1] + n_users
    return torch.stack([torch.cat([users, items]), torch.cat([items, users])])


def normalized_adjacency(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> Tensor:
    """D^{-1/2} A D^{-1/2} without self-loops, as an (N, N) CSR tensor.

    Duplicate edges are summed by ``gcn_norm``'s degree; zero-degree nodes (RecBole's padding id 0,
    cold items) get an all-zero row and column rather than NaN/inf.
    """
    edge_index, edge_weight = gcn_norm(
        edge_index, edge_weight, num_nodes=num_nodes, add_self_loops=False
    )
    return to_torch_csr_tensor(edge_index, edge_weight, size=(num_nodes, num_nodes))


class _SymSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric CSR ``adj``: the backward reuses ``adj`` (adjᵀ = adj).

    torch's generic CSR backward transposes the matrix on every call; with a fixed symmetric
    adjacency that transpose is wasted work.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(adj)
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        (adj,) = ctx.saved_tensors
        return None, adj @ grad


def sym_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """Multiply a symmetric sparse matrix by a dense matrix, differentiable in ``x`` only."""
    return _SymSpMM.apply(adj, x)
