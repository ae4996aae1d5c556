"""Importance and similarity of users from a trained teacher (and optionally an early student).

- ``difficulty``: the teacher's mean BPR loss −log σ(s(u, i⁺) − s(u, i⁻)) over the user's training
  positives, each against ``negatives`` uniform items that are not training positives (seeded);
- ``disagreement``: 1 − |top-K(teacher) ∩ top-K(student)| / K, training items excluded;
- ``activity``: the user's number of distinct training items (no teacher needed): heavy users train
  the item table most, and with a fold-in (:mod:`freqd.coreset.fold_in`) the light ones still get
  recommendations from it;
- similarity ``cosine``: kNN cosine of the teacher's user tables; ``jaccard``: of training histories.

Real users only: index j of every returned array is RecBole's internal user id j + 1.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from freqd.coreset.solvers import jaccard_similarity, knn_similarity

Importance = Literal["difficulty", "disagreement", "activity"]
IMPORTANCES: tuple[Importance, ...] = get_args(Importance)
Similarity = Literal["cosine", "jaccard"]
SIMILARITIES: tuple[Similarity, ...] = get_args(Similarity)


def histories(train_dataset) -> sp.csr_matrix:
    """Real users × all items, 1 where the user has the item in training."""
    users = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    items = train_dataset.inter_feat[train_dataset.iid_field].numpy()
    matrix = sp.csr_matrix((np.ones(len(users)), (users, items)),
                           shape=(train_dataset.user_num, train_dataset.item_num))
    matrix.data[:] = 1.0
    return matrix[1:]


def activity(train_dataset) -> np.ndarray:
    """Per real user, the number of distinct items in its training interactions."""
    return np.asarray(histories(train_dataset).sum(axis=1), dtype=np.float64).ravel()


@torch.no_grad()
def difficulty(user_all: torch.Tensor, item_all: torch.Tensor, train_dataset, negatives: int = 5,
               seed: int = 0) -> np.ndarray:
    """Per real user, the teacher's mean BPR loss over its positives × ``negatives`` non-positive items."""
    users = train_dataset.inter_feat[train_dataset.uid_field].long()
    pos = train_dataset.inter_feat[train_dataset.iid_field].long()
    n_items = train_dataset.item_num
    positives = torch.unique(users * n_items + pos)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(train_dataset.user_num, dtype=torch.float64)
    for _ in range(negatives):
        neg = torch.randint(1, n_items, (len(users),), generator=generator)
        clash = torch.isin(users * n_items + neg, positives)
        while clash.any():  # redraw the negatives that are training positives
            neg[clash] = torch.randint(1, n_items, (int(clash.sum()),), generator=generator)
            clash = torch.isin(users * n_items + neg, positives)
        u = user_all[users]
        margin = (u * item_all[pos]).sum(1) - (u * item_all[neg]).sum(1)
        total.index_add_(0, users, -F.logsigmoid(margin).double())
    counts = torch.bincount(users, minlength=train_dataset.user_num).double().clamp_min(1)
    return (total / counts / negatives).numpy()[1:]


@torch.no_grad()
def disagreement(teacher_tables: tuple[torch.Tensor, torch.Tensor], student_tables: tuple[torch.Tensor, torch.Tensor],
                 train_dataset, k: int = 20, chunk: int = 256) -> np.ndarray:
    """Per real user, 1 − overlap of the teacher's and the student's top-``k`` (training items and padding excluded)."""
    hist = histories(train_dataset)
    n_users = train_dataset.user_num - 1
    out = np.empty(n_users)
    for start in range(0, n_users, chunk):
        ids = torch.arange(start + 1, min(start + chunk, n_users) + 1)
        seen = torch.from_numpy(hist[start: start + len(ids)].toarray() > 0)
        tops = []
        for users, items in (teacher_tables, student_tables):
            scores = users[ids] @ items.T
            scores[:, 0] = -torch.inf
            scores[seen] = -torch.inf
            tops.append(torch.topk(scores, k, dim=1).indices)
        overlap = (tops[0][:, :, None] == tops[1][:, None, :]).any(2).sum(1)
        out[start: start + len(ids)] = 1.0 - overlap.numpy() / k
    return out


def similarity(kind: Similarity, user_table: torch.Tensor, train_dataset, k: int) -> sp.csr_matrix:
    """Real users × real users: kNN cosine of ``user_table``'s rows, or Jaccard of training histories."""
    if kind == "cosine":
        return knn_similarity(user_table[1:].detach().double().cpu().numpy(), k)
    if kind == "jaccard":
        return jaccard_similarity(histories(train_dataset), k)
    raise ValueError(f"similarity must be one of {SIMILARITIES}, got {kind!r}")
