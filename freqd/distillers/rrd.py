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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from freqd.distillers.base import Distiller, check, settings_from_config
from freqd.distillers.rankings import teacher_topk, training_csr
from freqd.distillers.sampling import (
    fit_pool,
    pair_scores,
    rank_decay_logits,
    sample_without_replacement,
    training_keys,
    uniform_unobserved,
)


def relaxed_ranking_loss(above: Tensor, below: Tensor) -> Tensor:
    """−Σ_rows Σ_k [above_k − log(Σ_{l≥k} exp above_l + Σ_j exp below_j)]: ``above`` in target order.

    ``above`` is (rows, K) scores of the items to rank in order, ``below`` (rows, L) scores of
    the items that only have to rank below them (L may be 0).
    """
    tail = torch.logcumsumexp(above.flip(-1), dim=-1).flip(-1)
    if below.shape[-1]:
        tail = torch.logaddexp(tail, torch.logsumexp(below, dim=-1, keepdim=True))
    return (tail - above).sum()


@dataclass(frozen=True)
class RRDSettings:
    """RRD's config keys: K interesting items from the teacher's top-``rrd_pool`` with decay
    temperature ``rrd_temperature``, and L ``rrd_uninteresting`` items sampled uniformly."""

    rrd_interesting: int = 100
    rrd_uninteresting: int = 200
    rrd_temperature: float = 10.0
    rrd_pool: int = 500

    from_config = classmethod(settings_from_config)

    def __post_init__(self) -> None:
        check([
            (self.rrd_pool >= 1, f"rrd_pool must be >= 1, got {self.rrd_pool}"),
            (1 <= self.rrd_interesting <= self.rrd_pool,
             f"rrd_interesting must lie in [1, rrd_pool={self.rrd_pool}], got {self.rrd_interesting}"),
            (self.rrd_uninteresting >= 0, f"rrd_uninteresting must be >= 0, got {self.rrd_uninteresting}"),
            (self.rrd_temperature > 0, f"rrd_temperature must be > 0, got {self.rrd_temperature}"),
        ])


class RRD(Distiller):
    """Relaxed ranking distillation on the teacher's top-N (see the module docstring)."""

    name = "RRD"
    needs = ("rankings",)

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__()
        self.settings = s = RRDSettings.from_config(config)
        train = training_csr(train_dataset)
        self.n_items = train_dataset.item_num
        # Every user needs rrd_uninteresting items outside its training items and the pool.
        n = fit_pool("rrd_pool", s.rrd_pool, train, reserve=s.rrd_uninteresting)
        check([(s.rrd_interesting <= n, f"rrd_interesting={s.rrd_interesting} exceeds the usable pool of {n} items")])
        pool = teacher_topk(teacher, train_dataset, n, cache_dir=config["checkpoint_dir"])
        device = next(teacher.parameters()).device
        self.register_buffer("pool", pool.to(device), persistent=False)
        self.register_buffer("pool_sorted", self.pool.sort(dim=1).values, persistent=False)
        self.register_buffer("train_keys", training_keys(train).to(device), persistent=False)
        self.register_buffer("interesting", None, persistent=False)
        self.register_buffer("uninteresting", None, persistent=False)
        self.mean_rank = float("nan")

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        s, device = self.settings, self.pool.device
        n_users, n = self.pool.shape
        ranks = sample_without_replacement(rank_decay_logits(n, s.rrd_temperature, device), s.rrd_interesting,
                                           n_rows=n_users).sort(dim=1).values
        self.interesting = self.pool.gather(1, ranks)
        self.uninteresting = uniform_unobserved(torch.arange(n_users, device=device), s.rrd_uninteresting,
                                                self.n_items, self.train_keys, exclude=self.pool_sorted)
        self.mean_rank = float(ranks.float().mean())

    def forward(self, interaction, student) -> Tensor:
        if self.interesting is None:
            raise RuntimeError("RRD: call on_epoch_start(epoch) before the first batch")
        batch = interaction[student.USER_ID]
        users = torch.unique(batch)
        s_users, s_items = student.embeddings()
        rows = s_users[users]
        above = pair_scores(rows, s_items, self.interesting[users])
        below = pair_scores(rows, s_items, self.uninteresting[users])
        return relaxed_ranking_loss(above, below) / batch.shape[0]

    def epoch_log(self, student) -> dict[str, Any]:
        return {"rrd_interesting_rank": self.mean_rank}
