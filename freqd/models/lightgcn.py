"""LightGCN (He et al., SIGIR 2020) on torch-geometric's normalisation and torch CSR products.

RecBole's own LightGCN builds its adjacency with ``dok_matrix._update``, gone in scipy >= 1.13,
and propagates a COO tensor; this one is built from the training split with ``gcn_norm``
(no self-loops) and propagates a CSR tensor whose symmetric backward reuses the same matrix.
"""

from __future__ import annotations

import torch
from recbole.model.loss import EmbLoss
from torch import Tensor

from freqd.graph import bipartite_edge_index, normalized_adjacency, sym_spmm
from freqd.models.base import EmbeddingRecommender


class LightGCN(EmbeddingRecommender):
    """Mean of layers 0..L of Â-propagated ID embeddings; BPR + ``reg_weight``·EmbLoss on layer 0.

    Parameter names match ``recbole.model.general_recommender.LightGCN``, so state dicts load
    both ways. The adjacency is a non-persistent buffer: it follows ``.to(device)`` but is not
    saved (it is rebuilt from the training data).
    """

    default_init = "xavier_uniform"

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.n_layers = int(config["n_layers"])
        if self.n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {self.n_layers}")
        self.reg_weight = float(config["reg_weight"] or 0.0)
        self.require_pow = bool(config["require_pow"])
        self.reg_loss = EmbLoss()
        inter = dataset.inter_feat
        edge_index = bipartite_edge_index(inter[self.USER_ID], inter[self.ITEM_ID], self.n_users)
        adj = normalized_adjacency(edge_index, self.n_users + self.n_items)
        self.register_buffer("norm_adj", adj, persistent=False)
        self.reset_parameters(config["init_std"])

    def compute_embeddings(self) -> tuple[Tensor, Tensor]:
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        total = x
        for _ in range(self.n_layers):
            x = sym_spmm(self.norm_adj, x)
            total = total + x
        total = total / (self.n_layers + 1)
        user_all, item_all = torch.split(total, [self.n_users, self.n_items])
        return user_all, item_all

    def calculate_loss(self, interaction) -> Tensor:
        self._cache = None
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_all, item_all = self.embeddings()
        mf_loss = self.bpr_loss(user, pos, neg, user_all, item_all)
        if not self.reg_weight:
            return mf_loss
        reg = self.reg_loss(
            self.user_embedding(user), self.item_embedding(pos), self.item_embedding(neg), require_pow=self.require_pow
        )
        return mf_loss + self.reg_weight * reg
