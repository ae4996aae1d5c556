"""Shared base of freqd's backbones: user/item embedding tables scored by inner product."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization, xavier_uniform_initialization
from recbole.model.loss import BPRLoss
from recbole.utils import InputType
from torch import Tensor, nn
from torch.nn import functional as F

_INITIALISERS = {"xavier_normal": xavier_normal_initialization, "xavier_uniform": xavier_uniform_initialization}


class EmbeddingRecommender(GeneralRecommender):
    """Inner-product recommender over ``user_embedding``/``item_embedding`` (RecBole's names).

    Subclasses define :meth:`embeddings`, the final (user, item) tables used for scoring; for
    BPR-MF they are the ID tables, for LightGCN the propagated ones. Distillers read the same
    method, so every backbone can be a teacher or a student at any ``embedding_size``.
    Full-sort evaluation caches the final tables until the model is trained again.
    """

    input_type = InputType.PAIRWISE
    default_init = "xavier_normal"
    # Whether the ID tables' recommendation-loss gradients are row-sparse (``sparse_embeddings``).
    supports_sparse_embeddings = False
    # True where the scores are inner products of the raw user_embedding/item_embedding rows (BPR):
    # a user's row can then be written from item rows (freqd.coreset.fold_in).
    scores_raw_tables = False

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        width = self.table_width(config)
        if width is None or width <= 0:
            raise ValueError(f"embedding_size must be positive, got {width}")
        self.embedding_size = width
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.loss = BPRLoss()
        self._cache: tuple[Tensor, Tensor] | None = None
        self.sparse_embeddings = bool(config["sparse_embeddings"])
        if self.sparse_embeddings and not self.supports_sparse_embeddings:
            raise ValueError(
                f"sparse_embeddings: True is not supported by {type(self).__name__}: its loss reaches every row "
                "of the ID tables each step (graph propagation), so row-sparse updates cannot help; "
                "set sparse_embeddings: False"
            )

    @classmethod
    def table_width(cls, config) -> int | None:
        """Width of the ID tables: ``embedding_size`` (a code student's width is its bit count)."""
        return None if config["embedding_size"] is None else int(config["embedding_size"])

    def reset_parameters(self, init_std: float | None) -> None:
        """RecBole's initialiser for this backbone, or N(0, init_std²) as in the reference code."""
        if init_std is None:
            self.apply(_INITIALISERS[self.default_init])
        else:
            for table in (self.user_embedding, self.item_embedding):
                nn.init.normal_(table.weight, std=float(init_std))

    def compute_embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user and item tables, differentiable w.r.t. the parameters (a subclass's definition)."""
        raise NotImplementedError

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user and item tables; inside :meth:`one_step` computed once and shared by every caller
        (the recommendation loss and a distiller: one LightGCN propagation per step, not two)."""
        shared = getattr(self, "_step_tables", None)
        if shared is not None:
            return shared
        tables = self.compute_embeddings()
        if getattr(self, "_in_step", False):
            self._step_tables = tables
        return tables

    @contextmanager
    def one_step(self):
        """A training step whose callers of :meth:`embeddings` share one computation."""
        self._in_step, self._step_tables = True, None
        try:
            yield
        finally:
            self._in_step, self._step_tables = False, None

    def sparse_tables(self) -> list[Tensor]:
        """The tables whose gradients are row-sparse (to be stepped row-wise); none unless ``sparse_embeddings``."""
        return [self.user_embedding.weight, self.item_embedding.weight] if self.sparse_embeddings else []

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    @torch.no_grad()
    def cached_embeddings(self) -> tuple[Tensor, Tensor]:
        """Final tables without gradients, computed once per evaluation."""
        if self._cache is None:
            user, item = self.embeddings()
            self._cache = user.detach(), item.detach()
        return self._cache

    def bpr_loss(self, user: Tensor, pos: Tensor, neg: Tensor, user_all: Tensor, item_all: Tensor) -> Tensor:
        # F.embedding's backward is a dense scatter, several times faster on CPU than indexing's.
        if self.sparse_embeddings:
            # Sparse gradients holding the batch's rows only; one lookup for positive and negative
            # items gives the item table one sparse gradient instead of two to be added.
            u = F.embedding(user, user_all, sparse=True)
            pos_emb, neg_emb = F.embedding(torch.cat([pos, neg]), item_all, sparse=True).split(len(pos))
        else:
            u = F.embedding(user, user_all)
            pos_emb, neg_emb = F.embedding(pos, item_all), F.embedding(neg, item_all)
        pos_score = torch.mul(u, pos_emb).sum(dim=1)
        neg_score = torch.mul(u, neg_emb).sum(dim=1)
        return self.loss(pos_score, neg_score)

    def predict(self, interaction) -> Tensor:
        user_all, item_all = self.cached_embeddings() if not self.training else self.embeddings()
        return torch.mul(user_all[interaction[self.USER_ID]], item_all[interaction[self.ITEM_ID]]).sum(dim=1)

    def full_sort_predict(self, interaction) -> Tensor:
        user_all, item_all = self.cached_embeddings()
        return torch.matmul(user_all[interaction[self.USER_ID]], item_all.T).view(-1)
