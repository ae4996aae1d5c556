"""Users outside a coreset, folded in: each gets the mean of its training items' embeddings.

A BPR model trained on a user coreset never sees the other users, so their rows keep their random
initial values and their recommendations are noise. Folding in gives such a user u the embedding

    e_u = (1 / |H_u|) Σ_{i ∈ H_u} e_i

over its training items H_u (of the full training split), so its scores are ⟨e_u, e_i⟩: the
item–item similarity of the trained item table, averaged over the user's history. Users without
training items keep their row. The fold-in is recomputed before every evaluation, so validation,
the best checkpoint and the test all see it; it costs one sparse product.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from freqd.coreset.signals import histories

FoldInMode = Literal["auto", "mean", "none"]


class FoldIn:
    """Writes the folded-in rows of the users of ``full_train`` that are not in ``kept`` into a model."""

    def __init__(self, full_train, kept: torch.Tensor) -> None:
        history = histories(full_train)  # real users × items, a repeated interaction counted once
        counts = history.getnnz(axis=1)
        rows = np.setdiff1d(np.flatnonzero(counts) + 1, np.asarray(kept))
        mean = sp.diags(1.0 / counts[rows - 1]) @ history[rows - 1]
        self.rows = torch.from_numpy(rows).long()
        self.mean = torch.sparse_csr_tensor(torch.from_numpy(mean.indptr).long(), torch.from_numpy(mean.indices).long(),
                                            torch.from_numpy(mean.data), mean.shape)

    @property
    def n_users(self) -> int:
        """How many users are folded in (outside the coreset, with training items)."""
        return len(self.rows)

    @torch.no_grad()
    def __call__(self, model) -> None:
        """Overwrite the model's rows of the folded-in users with the mean of their items' rows."""
        users, items = model.user_embedding.weight, model.item_embedding.weight
        folded = torch.sparse.mm(self.mean.to(items.device), items.detach().double())
        users[self.rows.to(users.device)] = folded.to(users.dtype)
        if hasattr(model, "_cache"):
            model._cache = None


def supports_fold_in(model) -> bool:
    """Whether the model scores its raw user and item tables (freqd's BPR), which a fold-in needs."""
    return getattr(model, "scores_raw_tables", False) is True


def fold_in_for(mode: FoldInMode, model, full_train, kept: torch.Tensor) -> FoldIn | None:
    """The fold-in a run on a coreset uses: ``auto`` folds in where the model allows it, ``mean``
    requires it (naming the key if the model cannot), ``none`` leaves the outside users as they are."""
    if mode == "none":
        return None
    if not supports_fold_in(model):
        if mode == "mean":
            raise ValueError(f"coreset_fold_in: 'mean' needs a BPR model (a user table scored directly), not "
                             f"{type(model).__name__}; set coreset_fold_in: none or auto")
        return None
    return FoldIn(full_train, kept)
