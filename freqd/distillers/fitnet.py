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

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


from freqd.distillers.base import Distiller, check, settings_from_config
from freqd.distillers.projectors import PROJECTORS, build_projector
from freqd.distillers.teacher import teacher_tables

SAMPLES = ("random", "batch")


@dataclass(frozen=True)
class FitNetSettings:
    """FitNet's config keys, with the reference values as defaults.

    ``projector_hidden`` (absolute width) overrides ``fitnet_hidden_ratio`` × d_T.
    """

    fitnet_sample: str = "random"
    fitnet_norm: bool = True
    fitnet_hidden_ratio: float = 5.0
    projector: str = "mlp"
    projector_bias: bool = False
    projector_hidden: int | None = None
    projector_experts: int = 5
    projector_dropout: float = 0.2

    @classmethod
    def from_config(cls, config) -> FitNetSettings:
        return settings_from_config(cls, config)

    def __post_init__(self) -> None:
        check([
            (self.fitnet_sample in SAMPLES, f"fitnet_sample={self.fitnet_sample!r} is not one of {SAMPLES}"),
            (self.projector in PROJECTORS, f"projector={self.projector!r} is not one of {PROJECTORS}"),
            (self.fitnet_hidden_ratio > 0, f"fitnet_hidden_ratio must be > 0, got {self.fitnet_hidden_ratio}"),
            (self.projector_hidden is None or self.projector_hidden >= 1,
             f"projector_hidden must be >= 1, got {self.projector_hidden}"),
            (self.projector_experts >= 1, f"projector_experts must be >= 1, got {self.projector_experts}"),
            (0.0 <= self.projector_dropout < 1.0,
             f"projector_dropout must lie in [0, 1), got {self.projector_dropout}"),
        ])


class FitNet(Distiller):
    """FitNet hint regression on user and item embeddings (see the module docstring)."""

    name = "FitNet"
    needs = ("embeddings",)

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__()
        self.settings = s = FitNetSettings.from_config(config)
        t_users, t_items = teacher_tables(teacher)
        self.register_buffer("t_users", t_users, persistent=False)
        self.register_buffer("t_items", t_items, persistent=False)
        self.n_users, self.n_items = student.n_users, student.n_items
        d_s, d_t = student.embedding_size, t_users.shape[1]
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

    def forward(self, interaction, student) -> Tensor:
        user = interaction[student.USER_ID]
        s_users, s_items = student.embeddings()
        loss = self.feature_sum(user, interaction[student.ITEM_ID], interaction[student.NEG_ITEM_ID], s_users, s_items)
        return loss / user.shape[0]
