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

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from freqd.distillers.base import Distiller, DistillerSettings, StepTables
from freqd.distillers.rankings import training_csr
from freqd.distillers.sampling import fit_pool, pair_scores, student_pool, teacher_pool
from freqd.settings import Float, Int


class KDSettings(DistillerSettings):
    """KD's config keys (CiteULike-t's reference values as defaults)."""

    kd_guide: Literal["student", "teacher"] = Field(
        "student", description="whose top-K items are the candidates (student: recomputed each epoch)")
    kd_topk: Int = Field(50, ge=2, description="K candidate items per user")
    kd_temperature: Float = Field(1.0, gt=0, description="softmax temperature τ of both score distributions")


class KD(Distiller):
    """Softmax cross-entropy on a top-K candidate set (see the module docstring)."""

    name = "KD"
    settings_cls = KDSettings
    # Buffers (registered in __init__), declared for the type checker.
    candidates: Tensor | None
    p_teacher: Tensor | None

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.train_matrix = training_csr(train_dataset)
        self.k = fit_pool("kd_topk", s.kd_topk, self.train_matrix)
        self.register_buffer("candidates", None, persistent=False)
        self.register_buffer("p_teacher", None, persistent=False)
        if s.kd_guide == "teacher":
            self._set_candidates(teacher_pool(config, teacher, train_dataset, self.k, self.t_tables))

    def _set_candidates(self, candidates: Tensor, chunk: int = 1024) -> None:
        """C_u for every user, and the teacher's softmax over it (in user chunks: chunk × K × d_T floats)."""
        self.candidates = candidates.to(self.t_users.device)
        tau = self.settings.kd_temperature
        self.p_teacher = torch.cat([
            torch.softmax(pair_scores(self.t_users[start:start + chunk], self.t_items,
                                      self.candidates[start:start + chunk]) / tau, dim=1)
            for start in range(0, self.candidates.shape[0], chunk)])

    def on_epoch_start(self, epoch: int, student) -> None:
        if self.settings.kd_guide == "student":
            self._set_candidates(student_pool(student, self.train_matrix, self.k, self.t_users.device))

    def forward(self, interaction, tables: StepTables) -> Tensor:
        if self.candidates is None:
            raise RuntimeError("KD: call on_epoch_start(epoch, student) before the first batch")
        assert self.p_teacher is not None  # set with candidates
        users = interaction[self.USER_ID]
        items = self.candidates[users]
        log_p_student = torch.log_softmax(
            pair_scores(tables.users[users], tables.items, items) / self.settings.kd_temperature, dim=1)
        return -(self.p_teacher[users] * log_p_student).sum() / users.shape[0]
