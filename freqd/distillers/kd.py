"""KD, Hinton-style distillation of softened score distributions.

The candidate set C_u is the top-K unobserved items of the student's ranking (``kd_guide:
student``, recomputed every epoch) or of the teacher's (``teacher``, computed once and cached).
On a batch of B triples with users u_1..u_B (repeats kept, as in the reference code):

    L = −(1/B) Σ_b Σ_{i∈C_{u_b}} p^T_i log p^S_i,   p^X = softmax(x(u_b, C_{u_b}) / τ),

the cross-entropy from the teacher's to the student's distribution at temperature τ, without
Hinton's τ² factor (the reference code has none). Unlike the reference, whose top-K may hold
training items, C_u holds unobserved items only, like every teacher ranking in freqd.

p^T depends only on the user and C_u, so it is computed for every user whenever C_u changes
(once per epoch, or once for the teacher's guide) instead of gathering B × K teacher rows per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from freqd.distillers.base import Distiller, check, settings_from_config
from freqd.distillers.rankings import teacher_topk, topk_unobserved, training_csr
from freqd.distillers.sampling import fit_pool, model_tables, pair_scores
from freqd.distillers.teacher import teacher_tables

GUIDES = ("student", "teacher")


@dataclass(frozen=True)
class KDSettings:
    """KD's config keys: the ``kd_guide``'s top-``kd_topk`` items at temperature ``kd_temperature``."""

    kd_guide: str = "student"
    kd_topk: int = 50
    kd_temperature: float = 1.0

    from_config = classmethod(settings_from_config)

    def __post_init__(self) -> None:
        check([
            (self.kd_guide in GUIDES, f"kd_guide={self.kd_guide!r} is not one of {GUIDES}"),
            (self.kd_topk >= 2, f"kd_topk must be >= 2, got {self.kd_topk}"),
            (self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}"),
        ])


class KD(Distiller):
    """Softmax cross-entropy on a top-K candidate set (see the module docstring)."""

    name = "KD"
    needs = ("scores", "rankings")

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__()
        self.settings = s = KDSettings.from_config(config)
        object.__setattr__(self, "student", student)
        self.train_matrix = training_csr(train_dataset)
        self.k = fit_pool("kd_topk", s.kd_topk, self.train_matrix)
        t_users, t_items = teacher_tables(teacher)
        self.register_buffer("t_users", t_users, persistent=False)
        self.register_buffer("t_items", t_items, persistent=False)
        self.register_buffer("candidates", None, persistent=False)
        self.register_buffer("p_teacher", None, persistent=False)
        if s.kd_guide == "teacher":
            self._set_candidates(teacher_topk(teacher, train_dataset, self.k, cache_dir=config["checkpoint_dir"]))

    @torch.no_grad()
    def _set_candidates(self, candidates: Tensor, chunk: int = 1024) -> None:
        """C_u for every user, and the teacher's softmax over it (in user chunks: chunk × K × d_T floats)."""
        self.candidates = candidates.to(self.t_users.device)
        tau = self.settings.kd_temperature
        self.p_teacher = torch.cat([
            torch.softmax(pair_scores(self.t_users[start:start + chunk], self.t_items,
                                      self.candidates[start:start + chunk]) / tau, dim=1)
            for start in range(0, self.candidates.shape[0], chunk)])

    def on_epoch_start(self, epoch: int) -> None:
        if self.settings.kd_guide == "student":
            self._set_candidates(topk_unobserved(*model_tables(self.student), self.train_matrix, self.k))

    def forward(self, interaction, student) -> Tensor:
        if self.candidates is None:
            raise RuntimeError("KD: call on_epoch_start(epoch) before the first batch")
        users = interaction[student.USER_ID]
        items = self.candidates[users]
        s_users, s_items = student.embeddings()
        log_p_student = torch.log_softmax(pair_scores(s_users[users], s_items, items) / self.settings.kd_temperature,
                                          dim=1)
        return -(self.p_teacher[users] * log_p_student).sum() / users.shape[0]

    def epoch_log(self, student) -> dict[str, Any]:
        return {}
