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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from freqd.distillers.base import Distiller, check, settings_from_config
from freqd.distillers.rankings import teacher_topk, topk_unobserved, training_csr
from freqd.distillers.sampling import (
    degrees,
    fit_pool,
    model_tables,
    pair_scores,
    sample_without_replacement,
    tournament_logits,
    training_keys,
    uniform_unobserved,
)
from freqd.distillers.teacher import teacher_tables

GUIDES = ("student", "teacher", "random")


@dataclass(frozen=True)
class CDSettings:
    """CD's config keys: ``cd_samples`` items per user from the ``cd_guide``'s top-``cd_pool``
    (tournament temperature ``cd_temperature``), soft labels σ((t + ``cd_t2``)/``cd_t1``)."""

    cd_guide: str = "student"
    cd_pool: int = 3000
    cd_temperature: float = 20.0
    cd_samples: int = 2
    cd_t1: float = 2.0
    cd_t2: float = 0.0

    from_config = classmethod(settings_from_config)

    def __post_init__(self) -> None:
        check([
            (self.cd_guide in GUIDES, f"cd_guide={self.cd_guide!r} is not one of {GUIDES}"),
            (self.cd_pool >= 1, f"cd_pool must be >= 1, got {self.cd_pool}"),
            (1 <= self.cd_samples <= self.cd_pool,
             f"cd_samples must lie in [1, cd_pool={self.cd_pool}], got {self.cd_samples}"),
            (self.cd_temperature > 0, f"cd_temperature must be > 0, got {self.cd_temperature}"),
            (self.cd_t1 > 0, f"cd_t1 must be > 0, got {self.cd_t1}"),
        ])


class CD(Distiller):
    """Collaborative distillation with rank-aware sampling (see the module docstring)."""

    name = "CD"
    needs = ("scores", "rankings")

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__()
        self.settings = s = CDSettings.from_config(config)
        object.__setattr__(self, "student", student)
        self.train_matrix = training_csr(train_dataset)
        self.n_items = train_dataset.item_num
        t_users, t_items = teacher_tables(teacher)
        self.register_buffer("t_users", t_users, persistent=False)
        self.register_buffer("t_items", t_items, persistent=False)
        device = t_users.device
        if s.cd_guide == "random":
            free = self.n_items - 1 - int(degrees(self.train_matrix).max())
            check([(s.cd_samples <= free, f"cd_samples={s.cd_samples} exceeds the {free} unobserved items "
                                          "of the most active user")])
            self.pool_size = 0
            self.register_buffer("train_keys", training_keys(self.train_matrix).to(device), persistent=False)
        else:
            self.pool_size = n = fit_pool("cd_pool", s.cd_pool, self.train_matrix)
            check([(s.cd_samples <= n, f"cd_samples={s.cd_samples} exceeds the usable pool of {n} items")])
            self.register_buffer("tournament", tournament_logits(n, s.cd_temperature, device), persistent=False)
        pool = None
        if s.cd_guide == "teacher":
            pool = teacher_topk(teacher, train_dataset, n, cache_dir=config["checkpoint_dir"]).to(device)
        self.register_buffer("pool", pool, persistent=False)
        self.register_buffer("samples", None, persistent=False)
        self.mean_rank = float("nan")

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        s, device = self.settings, self.t_users.device
        n_users = self.t_users.shape[0]
        if s.cd_guide == "random":
            self.samples = uniform_unobserved(torch.arange(n_users, device=device), s.cd_samples, self.n_items,
                                              self.train_keys)
            return
        if s.cd_guide == "student":
            self.pool = topk_unobserved(*model_tables(self.student), self.train_matrix, self.pool_size).to(device)
        ranks = sample_without_replacement(self.tournament, s.cd_samples, n_rows=n_users)
        self.samples = self.pool.gather(1, ranks)
        self.mean_rank = float(ranks.float().mean())

    def forward(self, interaction, student) -> Tensor:
        if self.samples is None:
            raise RuntimeError("CD: call on_epoch_start(epoch) before the first batch")
        users = interaction[student.USER_ID]
        items = self.samples[users]
        s_users, s_items = student.embeddings()
        logits = pair_scores(s_users[users], s_items, items)
        target = torch.sigmoid((pair_scores(self.t_users[users], self.t_items, items) + self.settings.cd_t2)
                               / self.settings.cd_t1)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / users.shape[0]

    def epoch_log(self, student) -> dict[str, Any]:
        return {} if self.settings.cd_guide == "random" else {"cd_sample_rank": self.mean_rank}
