"""CD, collaborative distillation (Lee et al., ICDM 2019).

Every epoch, per user u, n_s items Ŝ_u are drawn without replacement by rank-aware sampling from
a pool of the top-n unobserved items of the student's ranking (``cd_guide: student``, recomputed
every epoch) or of the teacher's (``teacher``): each draw is a tournament between two ranks drawn
iid with p(r) ∝ exp(−(r+1)/(n·T)), won by the better-ranked item, as in the reference code. With
``random`` the items are uniform among u's unobserved items. On a batch of B triples with users
u_1..u_B (repeats kept, as in the reference code):

    L = −(1/B) Σ_b Σ_{j∈Ŝ_{u_b}} [ q_j log σ(s(u_b,j)) + (1 − q_j) log(1 − σ(s(u_b,j))) ],
    q_j = σ((t(u_b,j) + t₂) / t₁),

binary cross-entropy towards the teacher's softened scores (computed from logits, so without
the reference's 10⁻¹⁰ inside the logs). Repeating tournaments until n_s distinct items are won
is sampling without replacement from the winner's law, which is how it is drawn here. Samples
are redrawn every epoch in every mode (the reference redraws them only when student-guided).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.nn import functional as F

from freqd.distillers.base import Distiller, DistillerSettings, StepTables
from freqd.distillers.rankings import training_csr
from freqd.distillers.sampling import (
    degrees,
    fit_pool,
    pair_scores,
    sample_without_replacement,
    student_pool,
    teacher_pool,
    tournament_logits,
    training_keys,
    uniform_unobserved,
)
from freqd.settings import Float, Int


class CDSettings(DistillerSettings):
    """CD's config keys (CiteULike-t's reference values as defaults; Gowalla draws 50 items per user)."""

    cd_guide: Literal["student", "teacher", "random"] = Field(
        "student", description="whose top-N the items are drawn from (student: recomputed each epoch), or "
                               "random: uniform unobserved items")
    cd_pool: Int = Field(3000, ge=1, description="N of the guide's top-N unobserved items per user")
    cd_temperature: Float = Field(20.0, gt=0, description="T of the rank-aware tournament, p(r) ∝ exp(−(r+1)/(N·T))")
    cd_samples: Int = Field(2, ge=1, description="items drawn per user each epoch")
    cd_t1: Float = Field(2.0, gt=0, description="t1 of the soft labels σ((t + t2) / t1)")
    cd_t2: Float = Field(0.0, description="t2 of the soft labels σ((t + t2) / t1)")

    @model_validator(mode="after")
    def _samples_fit(self) -> CDSettings:
        if self.cd_samples > self.cd_pool:
            raise ValueError(f"cd_samples={self.cd_samples} exceeds cd_pool={self.cd_pool}")
        return self


class CD(Distiller):
    """Collaborative distillation with rank-aware sampling (see the module docstring)."""

    name = "CD"
    settings_cls = CDSettings
    # Buffers (registered in __init__), declared for the type checker.
    train_keys: Tensor  # cd_guide "random" only
    tournament: Tensor  # cd_guide "student"/"teacher" only
    pool: Tensor | None
    samples: Tensor | None

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.train_matrix = training_csr(train_dataset)
        self.n_items = train_dataset.item_num
        device = self.t_users.device
        if s.cd_guide == "random":
            free = self.n_items - 1 - int(degrees(self.train_matrix).max())
            if s.cd_samples > free:
                raise ValueError(f"cd_samples={s.cd_samples} exceeds the {free} unobserved items of the most "
                                 "active user")
            self.pool_size = 0
            self.register_buffer("train_keys", training_keys(self.train_matrix).to(device), persistent=False)
        else:
            self.pool_size = n = fit_pool("cd_pool", s.cd_pool, self.train_matrix)
            if s.cd_samples > n:
                raise ValueError(f"cd_samples={s.cd_samples} exceeds the usable pool of {n} items")
            self.register_buffer("tournament", tournament_logits(n, s.cd_temperature, device), persistent=False)
        pool = None
        if s.cd_guide == "teacher":
            pool = teacher_pool(config, teacher, train_dataset, n, self.t_tables)
        self.register_buffer("pool", pool, persistent=False)
        self.register_buffer("samples", None, persistent=False)
        self.mean_rank = float("nan")

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, student) -> None:
        s, device = self.settings, self.t_users.device
        n_users = self.t_users.shape[0]
        if s.cd_guide == "random":
            self.samples = uniform_unobserved(torch.arange(n_users, device=device), s.cd_samples, self.n_items,
                                              self.train_keys)
            return
        if s.cd_guide == "student":
            self.pool = student_pool(student, self.train_matrix, self.pool_size, device)
        assert self.pool is not None  # the "teacher" guide's pool is built in __init__
        ranks = sample_without_replacement(self.tournament, s.cd_samples, n_rows=n_users)
        self.samples = self.pool.gather(1, ranks)
        self.mean_rank = float(ranks.float().mean())

    def forward(self, interaction, tables: StepTables) -> Tensor:
        if self.samples is None:
            raise RuntimeError("CD: call on_epoch_start(epoch, student) before the first batch")
        users = interaction[self.USER_ID]
        items = self.samples[users]
        logits = pair_scores(tables.users[users], tables.items, items)
        target = torch.sigmoid((pair_scores(self.t_users[users], self.t_items, items) + self.settings.cd_t2)
                               / self.settings.cd_t1)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / users.shape[0]

    def epoch_log(self, student) -> dict[str, Any]:
        return {} if self.settings.cd_guide == "random" else {"cd_sample_rank": self.mean_rank}
