"""DE, Distillation Experts (Kang et al., CIKM 2020, "DE-RRD").

Loss on a batch of B (user, positive, negative) triples, with B_U, B_+, B_− the unique users,
positives and negatives:

    L = [ Σ_{u∈B_U} ‖t_u − D_U(s_u, t_u)‖² + ½ Σ_{i∈B_+} ‖t_i − D_I(s_i, t_i)‖²
                                           + ½ Σ_{j∈B_−} ‖t_j − D_I(s_j, t_j)‖² ] / B

where D(s, t) = Σ_m a_m E_m(s) is a mixture of M MLP experts d_S → (d_S + d_T)/2 → d_T whose
weights a = Gumbel-softmax(log selector(t) / τ) come from the frozen teacher row (separate
user and item mixtures, :class:`~freqd.distillers.feature_kd.GumbelExperts`). τ is annealed
geometrically each epoch from ``de_tau_start`` (1) to ``de_tau_end`` (1e-10) over
``de_anneal_epochs`` (default: the run's ``epochs``, as in the reference), so the selection
becomes one-hot. The reference's sum divided by B keeps reference ``kd_weight`` values valid
next to RecBole's mean BPR loss.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from freqd.distillers.base import DistillerSettings, StepTables
from freqd.distillers.feature_kd import ExpertPairDistiller, GumbelExperts, check_annealing
from freqd.settings import Float, Int


class DESettings(DistillerSettings):
    """DE's config keys (reference values of Gowalla/Yelp as defaults; CiteULike-t uses 30 experts)."""

    de_experts: Int = Field(5, ge=1, description="number M of MLP experts per mixture (users, items)")
    de_hidden: Int | None = Field(None, ge=1, description="the experts' hidden width; unset: (d_S + d_T) // 2")
    de_tau_start: Float = Field(1.0, gt=0, description="Gumbel-softmax temperature at epoch 0")
    de_tau_end: Float = Field(1e-10, gt=0, description="Gumbel-softmax temperature after de_anneal_epochs")
    de_anneal_epochs: Int | None = Field(
        None, ge=1, description="epochs of the geometric temperature schedule; unset: the run's epochs")

    @model_validator(mode="after")
    def _anneals_down(self) -> DESettings:
        check_annealing("de", self.de_tau_start, self.de_tau_end)
        return self


class DE(ExpertPairDistiller):
    """Distillation Experts for freqd's embedding backbones (see the module docstring)."""

    name = "DE"
    settings_cls = DESettings
    log_prefix = "de"

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.user_experts, self.item_experts = self._expert_pair(
            config, student, s.de_experts, s.de_hidden, s.de_tau_start, s.de_tau_end, s.de_anneal_epochs)

    def expert_pair(self) -> tuple[GumbelExperts, GumbelExperts]:
        return self.user_experts, self.item_experts

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

    def forward(self, interaction, tables: StepTables) -> Tensor:
        user = interaction[self.USER_ID]
        loss = self.feature_sum(user, interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID], tables.users,
                                tables.items)
        return loss / user.shape[0]
