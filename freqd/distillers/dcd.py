"""DCD, dual correction distillation (Lee and Kim, CIKM 2021).

Every epoch, for each item i of the teacher's top-N pool of user u, the student's 0-based rank
rank_S(u,i) among u's unobserved items (a chunked full scoring pass) is compared with the
teacher's, rank_T(u,i) (its position in the pool). Per user, K under-estimated items are drawn
without replacement with probability ∝ max(tanh(max((rank_S − rank_T)/T, 0)), 10⁻⁵) and put in
teacher order ũ_1..ũ_K; K over-estimated items Õ_u are drawn from the rest of the pool with
probability ∝ max(tanh(max((rank_T − rank_S)/T, 0)), 10⁻⁵). On a batch of B triples with unique
users B_U:

    L = −(1/B) Σ_{u∈B_U} Σ_{k=1..K} [ s(u,ũ_k) − log( Σ_{l≥k} exp s(u,ũ_l) + Σ_{j∈Õ_u} exp s(u,j) ) ]

RRD's relaxed ranking loss: the items the student ranks too low go above, in the teacher's
order, the items it ranks too high. Only the item-side correction is implemented (as in the
reference code, woriazzc/KDs); the sum runs over the batch's unique users, as there. Three
choices differ from that code: student ranks count unobserved items only (like the teacher's),
the under-estimated items are sorted by teacher rank (the reference keeps the order drawn), and
the over-estimated set excludes them (the weight floor could otherwise put an item in both).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor

from freqd.distillers.base import Distiller, DistillerSettings, StepTables
from freqd.distillers.rankings import training_csr
from freqd.distillers.rrd import listwise_loss
from freqd.distillers.sampling import (
    fit_pool,
    model_tables,
    ranks_among_unobserved,
    sample_without_replacement,
    teacher_pool,
)
from freqd.settings import Float, Int

#: Floor of the sampling weights, so a set can be filled when fewer than K items have its sign.
WEIGHT_FLOOR = 1e-5


def correction_weights(student_rank: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(under, over) sampling weights of the pool items; the teacher rank is the pool position."""
    diff = (student_rank - torch.arange(student_rank.shape[1], device=student_rank.device)).float() / temperature
    under = torch.tanh(diff.clamp(min=0)).clamp(min=WEIGHT_FLOOR)
    over = torch.tanh((-diff).clamp(min=0)).clamp(min=WEIGHT_FLOOR)
    return under, over


def dual_correction_sample(student_rank: Tensor, k: int, temperature: float) -> tuple[Tensor, Tensor]:
    """Pool positions of the K under- and K over-estimated items per user, disjoint, ascending."""
    under_w, over_w = correction_weights(student_rank, temperature)
    under = sample_without_replacement(under_w.log(), k).sort(dim=1).values
    over_logits = over_w.log().scatter(1, under, float("-inf"))
    over = sample_without_replacement(over_logits, k).sort(dim=1).values
    return under, over


class DCDSettings(DistillerSettings):
    """DCD's config keys (CiteULike-t's reference values as defaults)."""

    dcd_samples: Int = Field(100, ge=1, description="K under- and K over-estimated items drawn per user each epoch")
    dcd_temperature: Float = Field(10.0, gt=0, description="T of the weights tanh(max(rank gap / T, 0))")
    dcd_pool: Int = Field(500, ge=2, description="N of the teacher's top-N unobserved items per user")

    @model_validator(mode="after")
    def _samples_fit(self) -> DCDSettings:
        if 2 * self.dcd_samples > self.dcd_pool:
            raise ValueError(f"dcd_samples={self.dcd_samples} needs dcd_pool >= 2·dcd_samples = "
                             f"{2 * self.dcd_samples}, got dcd_pool={self.dcd_pool}")
        return self


class DCD(Distiller):
    """Dual correction distillation on the teacher's top-N (see the module docstring)."""

    name = "DCD"
    settings_cls = DCDSettings
    # Buffers (registered in __init__), declared for the type checker.
    pool: Tensor
    under: Tensor | None
    over: Tensor | None

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.train_matrix = training_csr(train_dataset)
        n = fit_pool("dcd_pool", s.dcd_pool, self.train_matrix)
        if 2 * s.dcd_samples > n:
            raise ValueError(f"dcd_samples={s.dcd_samples} needs a pool of {2 * s.dcd_samples}, "
                             f"only {n} items are usable")
        self.register_buffer("pool", teacher_pool(config, teacher, train_dataset, n, self.t_tables), persistent=False)
        self.register_buffer("under", None, persistent=False)
        self.register_buffer("over", None, persistent=False)
        self.stats: dict[str, float] = {}

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, student) -> None:
        s = self.settings
        user_table, item_table = model_tables(student)
        student_rank = ranks_among_unobserved(user_table, item_table, self.train_matrix, self.pool)
        under, over = dual_correction_sample(student_rank, s.dcd_samples, s.dcd_temperature)
        self.under, self.over = self.pool.gather(1, under), self.pool.gather(1, over)
        gap = student_rank - torch.arange(self.pool.shape[1], device=student_rank.device)
        self.stats = {"dcd_student_rank": float(student_rank.float().mean()),
                      "dcd_underestimated": float((gap > 0).float().mean())}

    def forward(self, interaction, tables: StepTables) -> Tensor:
        if self.under is None:
            raise RuntimeError("DCD: call on_epoch_start(epoch, student) before the first batch")
        assert self.over is not None  # set with under
        return listwise_loss(interaction[self.USER_ID], tables, self.under, self.over)

    def epoch_log(self, student) -> dict[str, Any]:
        return dict(self.stats)
