"""PCKD, preference-consistent feature distillation (Zhu and Zhang, TKDE 2025, arXiv 2311.04549;
class ``CPD`` in woriazzc/KDs).

Loss on a batch of B triples with users u_1..u_B (duplicates kept, as in the reference):

    L = [ F + α · Σ_{b=1..B} ℓ(a_b, c_b) ] / B

* F: the summed feature loss of DE (``pckd_feature: de``, the reference) or FitNet (``fitnet``),
  configured by their own keys (``de_*`` or ``fitnet_*``/``projector*``).
* Q items per user are drawn once per epoch, for all users at once, from the teacher's top-K
  unobserved items (K = ``pckd_topk`` = 100; training items never appear) without replacement
  with p(rank r) ∝ exp(−r/T), r = 1..K, T = ``pckd_rank_temperature``, and kept in the
  teacher's order (best first).
* On user b's Q items, with pre-projection scores pre_q = s_u·s_q (the student's own, deployed
  embeddings) and post-projection scores post_q = D(s_u)·D(s_q) (the feature loss's projector):
  - ``pckd_consistency: projector`` (reference code): a = post with the student detached, c = pre
    detached. The regulariser trains only the projector, to rank the Q items as the student's
    pre-projection scores do, so matching the teacher after projection also shapes the student.
  - ``pckd_consistency: teacher`` (a reading of the paper's text): a = pre (gradient to the student),
    c = t_u·t_q, the teacher's scores.
* ℓ for ``pckd_loss: list`` (reference): CE(softmax(c/τ_ce), softmax(a/τ_ce)) over the Q items;
  for ``pair``: −log σ((a_1 − a_2)(c_1 − c_2)) on one pair per user. The reference uses the first
  two of its Q draws, which is a 2-item draw from the same distribution, so only 2 are drawn.

**Unverified** against the paper: (1) the regulariser's exact form: the reference code's listwise
CE and pairwise log-sigmoid are implemented; the listwise variant with a hinge margin that
the paper describes exists in the reference code but is not called, and is not offered;
(2) which side it trains: the reference detaches the student (``projector``); ``teacher`` is
a reading of the paper's text; (3) training items: the reference's top-K did not exclude them, here
they never appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F


from freqd.distillers.base import Distiller, check, settings_from_config
from freqd.distillers.de import DE
from freqd.distillers.fitnet import FitNet
from freqd.distillers.rankings import teacher_topk

FEATURES = {"de": DE, "fitnet": FitNet}
LOSSES = ("list", "pair")
CONSISTENCIES = ("projector", "teacher")


@dataclass(frozen=True)
class PCKDSettings:
    """PCKD's config keys (reference Gowalla values as defaults; CiteULike-t: α 0.1, Q 5, τ_ce 0.1)."""

    pckd_feature: str = "de"
    pckd_alpha: float = 0.5
    pckd_samples: int = 10
    pckd_topk: int = 100
    pckd_rank_temperature: float = 10.0
    pckd_loss: str = "list"
    pckd_tau_ce: float = 0.01
    pckd_consistency: str = "projector"

    @classmethod
    def from_config(cls, config) -> PCKDSettings:
        return settings_from_config(cls, config)

    def __post_init__(self) -> None:
        check([
            (self.pckd_feature in FEATURES, f"pckd_feature={self.pckd_feature!r} is not one of {tuple(FEATURES)}"),
            (self.pckd_loss in LOSSES, f"pckd_loss={self.pckd_loss!r} is not one of {LOSSES}"),
            (self.pckd_consistency in CONSISTENCIES,
             f"pckd_consistency={self.pckd_consistency!r} is not one of {CONSISTENCIES}"),
            (self.pckd_alpha >= 0, f"pckd_alpha must be >= 0, got {self.pckd_alpha}"),
            (self.pckd_topk >= 2, f"pckd_topk must be >= 2, got {self.pckd_topk}"),
            (2 <= self.pckd_samples <= self.pckd_topk,
             f"pckd_samples must lie in [2, pckd_topk={self.pckd_topk}], got {self.pckd_samples}"),
            (self.pckd_rank_temperature > 0,
             f"pckd_rank_temperature must be > 0, got {self.pckd_rank_temperature}"),
            (self.pckd_tau_ce > 0, f"pckd_tau_ce must be > 0, got {self.pckd_tau_ce}"),
        ])


def rank_decay_sample(topk: Tensor, samples: int, temperature: float,
                      generator: torch.Generator | None = None) -> Tensor:
    """Per row of ``topk`` (users × K, best first), ``samples`` distinct entries drawn with
    p(rank r) ∝ exp(−r/T), returned in rank order; one ``torch.multinomial`` for all rows."""
    k = topk.shape[1]
    weights = torch.exp(-torch.arange(1, k + 1, device=topk.device, dtype=torch.float) / temperature)
    ranks = torch.multinomial(weights.expand(topk.shape[0], k).contiguous(), samples, replacement=False,
                              generator=generator)
    return topk.gather(1, ranks.sort(dim=1).values)


class PCKD(Distiller):
    """Feature distillation plus a preference-consistency regulariser (see the module docstring)."""

    name = "PCKD"
    needs = ("embeddings", "rankings")

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__()
        self.settings = s = PCKDSettings.from_config(config)
        self.feature = FEATURES[s.pckd_feature](config, teacher, student, train_dataset)
        topk = teacher_topk(teacher, train_dataset, s.pckd_topk, cache_dir=config["checkpoint_dir"])
        self.register_buffer("topk", topk.to(self.feature.t_users.device), persistent=False)
        self.register_buffer("samples", self.resample(), persistent=False)
        self._pc_sum: Tensor | None = None
        self._pc_count = 0

    def resample(self) -> Tensor:
        """Q (``pair``: 2) teacher-ranked items per user, users × Q, drawn afresh."""
        s = self.settings
        return rank_decay_sample(self.topk, 2 if s.pckd_loss == "pair" else s.pckd_samples, s.pckd_rank_temperature)

    def on_epoch_start(self, epoch: int) -> None:
        self.feature.on_epoch_start(epoch)
        self.samples = self.resample()
        self._pc_sum, self._pc_count = None, 0

    def _scores(self, user: Tensor, items: Tensor, s_users: Tensor, s_items: Tensor) -> tuple[Tensor, Tensor]:
        """(a, c): the scores that learn and the target scores, both B × Q."""
        b, q = items.shape
        flat = items.reshape(-1)
        if self.settings.pckd_consistency == "teacher":
            pre = torch.einsum("bd,bqd->bq", s_users[user], s_items[flat].view(b, q, -1))
            with torch.no_grad():
                t_u, t_i = self.feature.t_users[user], self.feature.t_items[flat].view(b, q, -1)
                return pre, torch.einsum("bd,bqd->bq", t_u, t_i)
        s_u, s_i = s_users[user].detach(), s_items[flat].detach()
        post_u = self.feature.project("user", s_u, user)
        post_i = self.feature.project("item", s_i, flat).view(b, q, -1)
        pre = torch.einsum("bd,bqd->bq", s_u, s_i.view(b, q, -1))
        return torch.einsum("bd,bqd->bq", post_u, post_i), pre

    def consistency(self, user: Tensor, s_users: Tensor, s_items: Tensor) -> Tensor:
        """Σ_b ℓ(a_b, c_b) over the batch's users (the reference's sum)."""
        a, c = self._scores(user, self.samples[user], s_users, s_items)
        if self.settings.pckd_loss == "list":
            tau = self.settings.pckd_tau_ce
            return -(torch.softmax(c / tau, dim=1) * torch.log_softmax(a / tau, dim=1)).sum()
        return -F.logsigmoid((a[:, 0] - a[:, 1]) * (c[:, 0] - c[:, 1])).sum()

    def forward(self, interaction, student) -> Tensor:
        user = interaction[student.USER_ID]
        s_users, s_items = student.embeddings()
        feature = self.feature.feature_sum(user, interaction[student.ITEM_ID], interaction[student.NEG_ITEM_ID],
                                           s_users, s_items)
        pc = self.consistency(user, s_users, s_items)
        if self.training:
            self._pc_sum = pc.detach() if self._pc_sum is None else self._pc_sum + pc.detach()
            self._pc_count += user.shape[0]
        return (feature + self.settings.pckd_alpha * pc) / user.shape[0]

    def epoch_log(self, student) -> dict[str, Any]:
        pc = float(self._pc_sum) / self._pc_count if self._pc_count else float("nan")
        return {**self.feature.epoch_log(student), "pckd_consistency": pc}
