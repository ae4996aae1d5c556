"""RRD, relaxed ranking distillation (Kang et al., CIKM 2020).

Every epoch, per user u: K "interesting" items π_1..π_K drawn without replacement from the
teacher's top-N unobserved items with probability ∝ exp(−(r+1)/T) (r the 0-based teacher rank)
and kept in teacher order; L "uninteresting" items U_u drawn uniformly without replacement from
the items that are neither u's training items, nor in the teacher's top-N, nor padding item 0.
On a batch of B triples with unique users B_U:

    L = −(1/B) Σ_{u∈B_U} Σ_{k=1..K} [ s(u,π_k) − log( Σ_{l≥k} exp s(u,π_l) + Σ_{j∈U_u} exp s(u,j) ) ]

a Plackett–Luce likelihood of the teacher's order of the interesting items, all ranked above
the uninteresting ones. As in the reference code (woriazzc/KDs) the sum runs over the batch's
unique users; the log-sums are computed with logcumsumexp, so no score clamp is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor

from freqd.distillers.base import Distiller, DistillerSettings, StepTables
from freqd.distillers.rankings import training_csr
from freqd.distillers.sampling import (
    fit_pool,
    pair_scores,
    rank_decay_logits,
    sample_without_replacement,
    teacher_pool,
    training_keys,
    uniform_unobserved,
)
from freqd.settings import Float, Int


def relaxed_ranking_loss(above: Tensor, below: Tensor) -> Tensor:
    """−Σ_rows Σ_k [above_k − log(Σ_{l≥k} exp above_l + Σ_j exp below_j)]: ``above`` in target order.

    ``above`` is (rows, K) scores of the items to rank in order, ``below`` (rows, L) scores of
    the items that only have to rank below them (L may be 0).
    """
    tail = torch.logcumsumexp(above.flip(-1), dim=-1).flip(-1)
    if below.shape[-1]:
        tail = torch.logaddexp(tail, torch.logsumexp(below, dim=-1, keepdim=True))
    return (tail - above).sum()


# Scoring the batch's users against the whole catalogue is one matmul; it beats gathering each user's
# listed items (and scattering their gradients back) while the catalogue holds fewer than about 20 times
# as many items as a user's list (one CPU thread, 300 listed items: 2-3x faster at 1.7k-3.7k items,
# level near 6k, slower beyond).
DENSE_CATALOGUE_RATIO = 16


def listwise_loss(batch: Tensor, tables: StepTables, above: Tensor, below: Tensor,
                  dense: bool | None = None) -> Tensor:
    """:func:`relaxed_ranking_loss` over the unique users of ``batch`` (the triples' users), scored by the
    student: ``above[u]`` in order above ``below[u]``; divided by the number of triples (RRD, DCD).

    ``dense`` scores through the full user × catalogue product instead of gathering the listed items;
    ``None`` picks it when the catalogue is at most DENSE_CATALOGUE_RATIO times a user's list.
    """
    users = torch.unique(batch)
    rows = tables.users[users]
    above, below = above[users], below[users]
    if dense is None:
        dense = tables.items.shape[0] <= DENSE_CATALOGUE_RATIO * (above.shape[1] + below.shape[1])
    if dense:
        scores = rows @ tables.items.T
        above_scores, below_scores = scores.gather(1, above), scores.gather(1, below)
    else:
        above_scores, below_scores = pair_scores(rows, tables.items, above), pair_scores(rows, tables.items, below)
    return relaxed_ranking_loss(above_scores, below_scores) / batch.shape[0]


class RRDSettings(DistillerSettings):
    """RRD's config keys (CiteULike-t's reference values as defaults; Gowalla uses T 100)."""

    rrd_interesting: Int = Field(100, ge=1, description="K interesting items per user, from the teacher's pool")
    rrd_uninteresting: Int = Field(200, ge=0, description="L uninteresting items per user, uniform outside the pool")
    rrd_temperature: Float = Field(10.0, gt=0, description="T of the rank-decay draw p(r) ∝ exp(−(r+1)/T)")
    rrd_pool: Int = Field(500, ge=1, description="N of the teacher's top-N unobserved items per user")

    @model_validator(mode="after")
    def _interesting_fit(self) -> RRDSettings:
        if self.rrd_interesting > self.rrd_pool:
            raise ValueError(f"rrd_interesting={self.rrd_interesting} exceeds rrd_pool={self.rrd_pool}")
        return self


class RRD(Distiller):
    """Relaxed ranking distillation on the teacher's top-N (see the module docstring)."""

    name = "RRD"
    settings_cls = RRDSettings
    # Buffers (registered in __init__), declared for the type checker.
    pool: Tensor
    pool_sorted: Tensor
    train_keys: Tensor
    interesting: Tensor | None
    uninteresting: Tensor | None

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        train = training_csr(train_dataset)
        self.n_items = train_dataset.item_num
        # Every user needs rrd_uninteresting items outside its training items and the pool.
        n = fit_pool("rrd_pool", s.rrd_pool, train, reserve=s.rrd_uninteresting)
        if s.rrd_interesting > n:
            raise ValueError(f"rrd_interesting={s.rrd_interesting} exceeds the usable pool of {n} items")
        self.register_buffer("pool", teacher_pool(config, teacher, train_dataset, n, self.t_tables), persistent=False)
        self.register_buffer("pool_sorted", self.pool.sort(dim=1).values, persistent=False)
        self.register_buffer("train_keys", training_keys(train).to(self.pool.device), persistent=False)
        self.register_buffer("interesting", None, persistent=False)
        self.register_buffer("uninteresting", None, persistent=False)
        self.mean_rank = float("nan")

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, student) -> None:
        s, device = self.settings, self.pool.device
        n_users, n = self.pool.shape
        ranks = sample_without_replacement(rank_decay_logits(n, s.rrd_temperature, device), s.rrd_interesting,
                                           n_rows=n_users).sort(dim=1).values
        self.interesting = self.pool.gather(1, ranks)
        self.uninteresting = uniform_unobserved(torch.arange(n_users, device=device), s.rrd_uninteresting,
                                                self.n_items, self.train_keys, exclude=self.pool_sorted)
        self.mean_rank = float(ranks.float().mean())

    def forward(self, interaction, tables: StepTables) -> Tensor:
        if self.interesting is None:
            raise RuntimeError("RRD: call on_epoch_start(epoch, student) before the first batch")
        assert self.uninteresting is not None  # set with interesting
        return listwise_loss(interaction[self.USER_ID], tables, self.interesting, self.uninteresting)

    def epoch_log(self, student) -> dict[str, Any]:
        return {"rrd_interesting_rank": self.mean_rank}
