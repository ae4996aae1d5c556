"""The frozen teacher's tables, as every distiller reads them."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch


class EmbeddingModel(Protocol):
    """What a teacher needs: ``embeddings()`` (its final user and item tables) and ``eval()``."""

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def eval(self): ...


class TeacherTables(NamedTuple):
    """A teacher's final user and item tables."""

    users: torch.Tensor
    items: torch.Tensor


@torch.no_grad()
def teacher_tables(teacher: EmbeddingModel | TeacherTables) -> TeacherTables:
    """The teacher's final user and item tables (propagated for LightGCN), computed once.

    Tables already taken (a :class:`TeacherTables`) are returned as they are, not copied.
    """
    if isinstance(teacher, TeacherTables):
        return teacher
    teacher.eval()
    users, items = teacher.embeddings()
    return TeacherTables(users.detach().clone(), items.detach().clone())
