"""BPR-MF (Rendle et al., UAI 2009) with RecBole's parameter names, loss and initialisation."""

from __future__ import annotations

from torch import Tensor

from freqd.models.base import EmbeddingRecommender


class BPR(EmbeddingRecommender):
    """Matrix factorisation trained with the (mean-reduced) BPR loss.

    State dicts are interchangeable with ``recbole.model.general_recommender.BPR``; with the same
    seed and config it trains to the same metrics. With ``sparse_embeddings`` the loss gives the
    ID tables sparse gradients holding only the batch's rows.
    """

    supports_sparse_embeddings = True
    scores_raw_tables = True

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.reset_parameters(config["init_std"])

    def compute_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight

    def calculate_loss(self, interaction) -> Tensor:
        self._cache = None
        user_all, item_all = self.embeddings()
        return self.bpr_loss(
            interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID], user_all, item_all
        )
