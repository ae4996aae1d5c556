"""DE, Distillation Experts (Kang et al., CIKM 2020, "DE-RRD").

Loss on a batch of B (user, positive, negative) triples, with B_U, B_+, B_− the unique users,
positives and negatives:

    L = [ Σ_{u∈B_U} ‖t_u − D_U(s_u, t_u)‖² + ½ Σ_{i∈B_+} ‖t_i − D_I(s_i, t_i)‖²
                                           + ½ Σ_{j∈B_−} ‖t_j − D_I(s_j, t_j)‖² ] / B

where D(s, t) = Σ_m a_m E_m(s) is a mixture of M MLP experts d_S → (d_S + d_T)/2 → d_T whose
weights a = Gumbel-softmax(log selector(t) / τ) come from the frozen teacher row (separate
user and item mixtures, :class:`~freqd.distillers._feature_kd.GumbelExperts`). τ is annealed
geometrically each epoch from ``de_tau_start`` (1) to ``de_tau_end`` (1e-10) over
``de_anneal_epochs`` (default: the run's ``epochs``, as in the reference), so the selection
becomes one-hot. The reference's sum divided by B keeps reference ``kd_weight`` values valid
next to RecBole's mean BPR loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from freqd.distillers._feature_kd import GumbelExperts, anneal_epochs, geometric_anneal
from freqd.distillers.base import Distiller, check, settings_from_config
from freqd.distillers.teacher import teacher_tables


@dataclass(frozen=True)
class DESettings:
    """DE's config keys: ``de_experts`` M (reference 5 on Gowalla/Yelp, 30 on CiteULike-t);
    ``de_hidden`` the experts' width (None: (d_S + d_T) // 2); the Gumbel temperature goes from
    ``de_tau_start`` to ``de_tau_end`` over ``de_anneal_epochs`` epochs (None: ``epochs``)."""

    de_experts: int = 5
    de_hidden: int | None = None
    de_tau_start: float = 1.0
    de_tau_end: float = 1e-10
    de_anneal_epochs: int | None = None

    @classmethod
    def from_config(cls, config) -> DESettings:
        return settings_from_config(cls, config)

    def __post_init__(self) -> None:
        check([
            (self.de_experts >= 1, f"de_experts must be >= 1, got {self.de_experts}"),
            (self.de_hidden is None or self.de_hidden >= 1, f"de_hidden must be >= 1, got {self.de_hidden}"),
            (0.0 < self.de_tau_end <= self.de_tau_start,
             f"need 0 < de_tau_end <= de_tau_start, got de_tau_end={self.de_tau_end}, "
             f"de_tau_start={self.de_tau_start}"),
            (self.de_anneal_epochs is None or self.de_anneal_epochs >= 1,
             f"de_anneal_epochs must be >= 1, got {self.de_anneal_epochs}"),
        ])


class DE(Distiller):
    """Distillation Experts for freqd's embedding backbones (see the module docstring)."""

    name = "DE"
    needs = ("embeddings",)

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__()
        self.settings = s = DESettings.from_config(config)
        t_users, t_items = teacher_tables(teacher)
        self.register_buffer("t_users", t_users, persistent=False)
        self.register_buffer("t_items", t_items, persistent=False)
        d_s, d_t = student.embedding_size, t_users.shape[1]
        hidden = s.de_hidden or (d_s + d_t) // 2
        self.user_experts = GumbelExperts(d_s, d_t, s.de_experts, hidden)
        self.item_experts = GumbelExperts(d_s, d_t, s.de_experts, hidden)
        self.anneal_epochs = anneal_epochs(s.de_anneal_epochs, config, "de_anneal_epochs")
        self.tau = s.de_tau_start

    def on_epoch_start(self, epoch: int) -> None:
        s = self.settings
        self.tau = geometric_anneal(epoch, s.de_tau_start, s.de_tau_end, self.anneal_epochs)
        self.user_experts.reset_usage()
        self.item_experts.reset_usage()

    def project(self, side: str, s_rows: Tensor, ids: Tensor, track: bool = False) -> Tensor:
        """Post-projection rows D(s, t) of users or items ``ids`` (``side`` "user" or "item")."""
        experts, table = (self.user_experts, self.t_users) if side == "user" else (self.item_experts, self.t_items)
        return experts(s_rows, table.index_select(0, ids), self.tau, track=track)

    def _errors(self, side: str, s_table: Tensor, ids: Tensor) -> Tensor:
        table = self.t_users if side == "user" else self.t_items
        reconstruction = self.project(side, s_table.index_select(0, ids), ids, track=True)
        return (table.index_select(0, ids) - reconstruction).pow(2).sum(1)

    def feature_sum(self, user: Tensor, pos: Tensor, neg: Tensor, s_users: Tensor, s_items: Tensor) -> Tensor:
        """The reference's summed DE loss on the batch's unique users, positives and negatives."""
        items = torch.cat([torch.unique(pos), torch.unique(neg.reshape(-1))])
        users = torch.unique(user)
        return self._errors("user", s_users, users).sum() + 0.5 * self._errors("item", s_items, items).sum()

    def forward(self, interaction, student) -> Tensor:
        user = interaction[student.USER_ID]
        s_users, s_items = student.embeddings()
        loss = self.feature_sum(user, interaction[student.ITEM_ID], interaction[student.NEG_ITEM_ID], s_users, s_items)
        return loss / user.shape[0]

    def epoch_log(self, student) -> dict[str, Any]:
        return {"de_tau": self.tau, "de_user_usage_entropy": self.user_experts.usage_entropy(),
                "de_item_usage_entropy": self.item_experts.usage_entropy()}
