"""The frozen teacher's tables, as every distiller reads them."""

from __future__ import annotations

import torch

from freqd.models import EmbeddingRecommender


@torch.no_grad()
def teacher_tables(teacher: EmbeddingRecommender) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's final user and item tables (propagated for LightGCN), computed once."""
    teacher.eval()
    users, items = teacher.embeddings()
    return users.detach().clone(), items.detach().clone()
