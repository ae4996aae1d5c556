"""Embedding-space adversarial perturbation (APR-style) of a deployed model's final tables (docs/trust.md).

One gradient of the BPR loss over the training triples with respect to the final user and item
tables (what serving scores with) gives, per row, the direction that hurts ranking most to first
order; each row moves by ε along its normalised gradient, with ε a multiple of the mean row norm.
The perturbed tables are ranked exactly as the clean ones, so ε = 0 reproduces the clean metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

EPSILONS = (0.1, 0.5, 1.0)


def bpr_table_gradients(users: Tensor, items: Tensor, triples: tuple[Tensor, Tensor, Tensor],
                        chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """∇ of the mean BPR loss −log σ(s_ui − s_uj) over ``triples`` (user, positive, negative) w.r.t. both tables."""
    u_idx, pos, neg = triples
    if len(u_idx) == 0:
        raise ValueError("no training triples to take the BPR gradient over")
    user_table = users.detach().clone().requires_grad_(True)
    item_table = items.detach().clone().requires_grad_(True)
    for begin in range(0, len(u_idx), chunk):
        end = begin + chunk
        u = user_table[u_idx[begin:end]]
        difference = (u * (item_table[pos[begin:end]] - item_table[neg[begin:end]])).sum(dim=1)
        (F.softplus(-difference).sum() / len(u_idx)).backward()
    assert user_table.grad is not None and item_table.grad is not None
    return user_table.grad, item_table.grad


def unit_rows(gradient: Tensor) -> Tensor:
    """Each row divided by its norm; rows without gradient stay zero."""
    norms = gradient.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, gradient / norms.clamp_min(torch.finfo(gradient.dtype).tiny), torch.zeros_like(gradient))


def mean_row_norm(users: Tensor, items: Tensor, first_item: int = 1) -> float:
    """The mean norm of the real rows of both tables (items from ``first_item``, past RecBole's padding item)."""
    rows = torch.cat([users[1:], items[first_item:]]) if first_item else torch.cat([users, items])
    return float(rows.norm(dim=1).mean())


def perturb(users: Tensor, items: Tensor, directions: tuple[Tensor, Tensor], epsilon: float) -> tuple[Tensor, Tensor]:
    """Tables moved by ``epsilon`` along the (unit-row) ``directions``: the adversarial tables at that budget."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")
    return users + epsilon * directions[0], items + epsilon * directions[1]


class TableScorer:
    """A scorer over fixed (user, item) tables with the model interface that full-sort evaluation reads."""

    def __init__(self, users: Tensor, items: Tensor, user_field: str) -> None:
        self.users, self.items, self.USER_ID = users, items, user_field

    def eval(self) -> TableScorer:
        return self

    def full_sort_predict(self, interaction) -> Tensor:
        return (self.users[interaction[self.USER_ID]] @ self.items.T).view(-1)
