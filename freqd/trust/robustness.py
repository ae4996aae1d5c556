"""Embedding-space adversarial perturbation (APR-style) of a deployed model's final tables (docs/trust.md).

One gradient of the BPR loss over the training triples with respect to the final user and item
tables (what serving scores with) gives, per row, the direction that hurts ranking most to first
order; each row moves by ε along its normalised gradient, with ε a multiple of its table's mean row norm.
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


def mean_row_norm(table: Tensor, first: int = 1) -> float:
    """The mean norm of a table's real rows (from ``first``, past RecBole's padding row)."""
    return float(table[first:].norm(dim=1).mean())


def perturb(users: Tensor, items: Tensor, directions: tuple[Tensor, Tensor], factor: float) -> tuple[Tensor, Tensor]:
    """Tables moved along the (unit-row) ``directions`` by ``factor`` × each table's mean row norm.

    One budget per table keeps the attack invariant to the scale a factorisation can shift between
    its tables (u·c, i/c give the same scores): the perturbed scores are then the same too.
    """
    if factor < 0:
        raise ValueError(f"epsilon must be non-negative, got {factor}")
    return (users + factor * mean_row_norm(users) * directions[0],
            items + factor * mean_row_norm(items) * directions[1])


class TableScorer:
    """A scorer over fixed (user, item) tables with the model interface that full-sort evaluation reads."""

    def __init__(self, users: Tensor, items: Tensor, user_field: str) -> None:
        self.users, self.items, self.USER_ID = users, items, user_field

    def eval(self) -> TableScorer:
        return self

    def full_sort_predict(self, interaction) -> Tensor:
        return (self.users[interaction[self.USER_ID]] @ self.items.T).view(-1)
