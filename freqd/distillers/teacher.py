"""The frozen teacher's tables, as every distiller reads them."""

from __future__ import annotations

from typing import NamedTuple

import torch

from freqd.models import EmbeddingRecommender


class TeacherTables(NamedTuple):
    """A teacher's final user and item tables."""

    users: torch.Tensor
    items: torch.Tensor


@torch.no_grad()
def teacher_tables(teacher: EmbeddingRecommender | TeacherTables) -> TeacherTables:
    """The teacher's final user and item tables (propagated for LightGCN), computed once.

    Tables already taken (a :class:`TeacherTables`) are returned as they are, not copied.
    """
    if isinstance(teacher, TeacherTables):
        return teacher
    teacher.eval()
    users, items = teacher.embeddings()
    return TeacherTables(users.detach().clone(), items.detach().clone())
