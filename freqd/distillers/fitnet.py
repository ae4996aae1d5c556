"""FitNet (Romero et al., ICLR 2015) adapted to embeddings.

Loss on a batch of B triples:

    L = [ Σ_{u∈Ŝ_U} ‖n(P_U(s_u)) − n(t_u)‖² + Σ_{i∈Ŝ_I} ‖n(P_I(s_i)) − n(t_i)‖² ] / B

with separate user and item projectors P_U, P_I (``projector*`` keys; default an MLP of hidden
width ``fitnet_hidden_ratio``·d_T = 5·d_T with dropout 0.2), n the row L2 normalisation when
``fitnet_norm`` (the reference CiteULike-t config sets it) and the identity otherwise.

``fitnet_sample``:
* ``random`` (reference): Ŝ_U, Ŝ_I are B users and B items drawn uniformly without replacement
  from all users and items on every step, independently of the batch (capped at the number of
  real users/items; RecBole's padding id 0 is never drawn);
* ``batch``: Ŝ_U, Ŝ_I are the batch's unique users and unique positive ∪ negative items.

FreqD with α = 0 and squared L2 differs from ``batch`` only in its ½ weight on item terms.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from freqd.distillers.base import Distiller, StepTables
from freqd.distillers.projectors import ProjectorSettings, build_projector
from freqd.settings import Float, Int


class FitNetSettings(ProjectorSettings):
    """FitNet's config keys, with the reference values as defaults."""

    fitnet_sample: Literal["random", "batch"] = Field(
        "random", description="users and items distilled per step: B random ones (reference) or the batch's own")
    fitnet_norm: bool = Field(True, description="L2-normalise the projected and the teacher rows before comparing")
    fitnet_hidden_ratio: Float = Field(5.0, gt=0, description="MLP hidden width as a multiple of d_T "
                                                              "(projector_hidden overrides it)")
    projector_hidden: Int | None = Field(
        None, ge=1, description="hidden width of the mlp/experts projectors; unset: fitnet_hidden_ratio · d_T")
    projector_dropout: Float = Field(0.2, ge=0, lt=1, description="dropout before each layer of the MLP projectors")


class FitNet(Distiller):
    """FitNet hint regression on user and item embeddings (see the module docstring)."""

    name = "FitNet"
    settings_cls = FitNetSettings

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.n_users, self.n_items = student.n_users, student.n_items
        d_s, d_t = student.embedding_size, self.t_users.shape[1]
        hidden = s.projector_hidden or max(1, round(s.fitnet_hidden_ratio * d_t))
        self.user_projector, self.item_projector = (
            build_projector(s.projector, d_s, d_t, hidden, s.projector_experts, s.projector_dropout, s.projector_bias)
            for _ in range(2)
        )

    def entities(self, user: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
        """The users and items distilled on this step (see ``fitnet_sample``)."""
        if self.settings.fitnet_sample == "batch":
            return torch.unique(user), torch.unique(torch.cat([pos, neg.reshape(-1)]))
        b, device = user.shape[0], user.device
        users = torch.randperm(self.n_users - 1, device=device)[:b] + 1
        items = torch.randperm(self.n_items - 1, device=device)[:b] + 1
        return users, items

    def project(self, side: str, s_rows: Tensor, ids: Tensor, track: bool = False) -> Tensor:
        """Post-projection rows P(s) of users or items (``side`` "user" or "item"); ``ids`` unused."""
        return (self.user_projector if side == "user" else self.item_projector)(s_rows)

    def _errors(self, side: str, s_table: Tensor, ids: Tensor) -> Tensor:
        projected = self.project(side, s_table.index_select(0, ids), ids)
        target = (self.t_users if side == "user" else self.t_items).index_select(0, ids)
        if self.settings.fitnet_norm:
            projected, target = F.normalize(projected, dim=1), F.normalize(target, dim=1)
        return (projected - target).pow(2).sum(1)

    def feature_sum(self, user: Tensor, pos: Tensor, neg: Tensor, s_users: Tensor, s_items: Tensor) -> Tensor:
        """The reference's summed FitNet loss on this step's users and items."""
        users, items = self.entities(user, pos, neg)
        return self._errors("user", s_users, users).sum() + self._errors("item", s_items, items).sum()

    def forward(self, interaction, tables: StepTables) -> Tensor:
        user = interaction[self.USER_ID]
        loss = self.feature_sum(user, interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID], tables.users,
                                tables.items)
        return loss / user.shape[0]
