"""KD, Hinton-style distillation of softened score distributions.

The candidate set C_u is the top-K unobserved items of the student's ranking (``kd_guide:
student``, recomputed every epoch) or of the teacher's (``teacher``, computed once and cached).
On a batch of B triples with users u_1..u_B (repeats kept, as in the reference code):

    L = −(1/B) Σ_b Σ_{i∈C_{u_b}} p^T_i log p^S_i,   p^X = softmax(x(u_b, C_{u_b}) / τ),

the cross-entropy from the teacher's to the student's distribution at temperature τ, without
Hinton's τ² factor (the reference code has none). Unlike the reference, whose top-K may hold
training items, C_u holds unobserved items only, like every teacher ranking in freqd.

p^T depends only on the user and C_u, so it is computed for every user whenever C_u changes
(once per epoch, or once for the teacher's guide) instead of gathering B × K teacher rows per step;
the student's side is computed once per distinct user of the batch and weighted by its number of
triples (the same sum).

**Graph-smoothed scores** (``kd_smooth_alpha`` = a > 0, off by default): both score vectors are
low-pass filtered on the item–item co-occurrence graph before the softmax, x ↦ M_u x with
M_u = [(1 − a) I + a Â]_{C_u, C_u}, the filter H = I − aL restricted to the candidates (Â: the
normalised top-``kd_smooth_topk`` co-occurrence graph of :func:`freqd.graph.cooccurrence_adjacency`),
and the cross-entropy is divided by (1 − a)², as in the authors' later code (``FreqAll``), which
smooths a listwise term this way. Items that co-occur then share their scores, so the student is
taught the teacher's ranking at low graph frequencies. M_u is built for every user when C_u
changes: users × K × K floats (citeulike-t, K = 50: 55 MB).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from freqd.distillers.base import Distiller, DistillerSettings, StepTables
from freqd.distillers.rankings import training_csr
from freqd.distillers.sampling import fit_pool, pair_scores, student_pool, teacher_pool
from freqd.graph import cooccurrence_adjacency
from freqd.settings import Float, Int


class KDSettings(DistillerSettings):
    """KD's config keys (CiteULike-t's reference values as defaults)."""

    kd_guide: Literal["student", "teacher"] = Field(
        "student", description="whose top-K items are the candidates (student: recomputed each epoch)")
    kd_topk: Int = Field(50, ge=2, description="K candidate items per user")
    kd_temperature: Float = Field(1.0, gt=0, description="softmax temperature τ of both score distributions")
    kd_smooth_alpha: Float = Field(
        0.0, ge=0, lt=1, description="a: both scores filtered by (1 − a)I + aÂ on the item co-occurrence graph "
                                     "over the candidates before the softmax (0: off)")
    kd_smooth_topk: Int = Field(5, ge=1, description="neighbours per item of the co-occurrence graph of "
                                                     "kd_smooth_alpha")


class KD(Distiller):
    """Softmax cross-entropy on a top-K candidate set (see the module docstring)."""

    name = "KD"
    settings_cls = KDSettings
    # Buffers (registered in __init__), declared for the type checker.
    candidates: Tensor | None
    p_teacher: Tensor | None
    smoothing: Tensor | None  # users × K × K, with kd_smooth_alpha only
    graph_keys: Tensor | None  # Â's entries as sorted keys row·n_items + col, with kd_smooth_alpha only
    graph_values: Tensor | None  # their weights

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.train_matrix = training_csr(train_dataset)
        self.k = fit_pool("kd_topk", s.kd_topk, self.train_matrix)
        self.register_buffer("candidates", None, persistent=False)
        self.register_buffer("p_teacher", None, persistent=False)
        self.register_buffer("smoothing", None, persistent=False)
        keys = values = None
        if s.kd_smooth_alpha > 0:
            inter = train_dataset.inter_feat
            graph = cooccurrence_adjacency(inter[train_dataset.uid_field], inter[train_dataset.iid_field],
                                           train_dataset.user_num, train_dataset.item_num, s.kd_smooth_topk, "item")
            crow, col = graph.crow_indices(), graph.col_indices()
            # Sorted: CSR rows in order, columns sorted within each row.
            keys = torch.repeat_interleave(torch.arange(graph.shape[0]), crow[1:] - crow[:-1]) * graph.shape[1] + col
            values = graph.values()
        self.register_buffer("graph_keys", keys, persistent=False)
        self.register_buffer("graph_values", values, persistent=False)
        if s.kd_guide == "teacher":
            self._set_candidates(teacher_pool(config, teacher, train_dataset, self.k, self.t_tables))

    def _set_candidates(self, candidates: Tensor, chunk: int = 1024) -> None:
        """C_u for every user, and the teacher's softmax over it (in user chunks: chunk × K × d_T floats)."""
        self.candidates = candidates.to(self.t_users.device)
        tau = self.settings.kd_temperature
        if self.graph_keys is not None:
            self.smoothing = torch.cat([self._smoothing(self.candidates[start:start + chunk])
                                        for start in range(0, self.candidates.shape[0], chunk)])
        self.p_teacher = torch.cat([
            torch.softmax(self._smooth(pair_scores(self.t_users[start:start + chunk], self.t_items,
                                                   self.candidates[start:start + chunk]),
                                       slice(start, start + chunk)) / tau, dim=1)
            for start in range(0, self.candidates.shape[0], chunk)])

    def _smoothing(self, candidates: Tensor) -> Tensor:
        """M_u = (1 − a)I + a·Â[C_u, C_u] for each row of ``candidates`` (rows × K × K)."""
        assert self.graph_keys is not None and self.graph_values is not None
        a, keys, n_items = self.settings.kd_smooth_alpha, self.graph_keys, self.t_items.shape[0]
        eye = torch.eye(candidates.shape[1], device=candidates.device)
        if len(keys) == 0:
            return ((1 - a) * eye).expand(candidates.shape[0], -1, -1).clone()
        wanted = candidates.unsqueeze(2) * n_items + candidates.unsqueeze(1)  # (j, k) of C_u × C_u as keys
        position = torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)
        adjacency = torch.where(keys[position] == wanted, self.graph_values[position], 0.0)
        return (1 - a) * eye + a * adjacency

    def _smooth(self, scores: Tensor, users: Tensor | slice) -> Tensor:
        """``scores`` (rows × K, over each row's candidates) filtered by M_u when smoothing is on."""
        if self.smoothing is None:
            return scores
        return torch.bmm(self.smoothing[users], scores.unsqueeze(-1)).squeeze(-1)

    def on_epoch_start(self, epoch: int, student) -> None:
        if self.settings.kd_guide == "student":
            self._set_candidates(student_pool(student, self.train_matrix, self.k, self.t_users.device))

    def forward(self, interaction, tables: StepTables) -> Tensor:
        if self.candidates is None:
            raise RuntimeError("KD: call on_epoch_start(epoch, student) before the first batch")
        assert self.p_teacher is not None  # set with candidates
        users = interaction[self.USER_ID]
        # Each distinct user once, weighted by its number of triples: the same sum as over the triples.
        distinct, counts = torch.unique(users, return_counts=True)
        items = self.candidates[distinct]
        log_p_student = torch.log_softmax(
            self._smooth(pair_scores(tables.users[distinct], tables.items, items), distinct)
            / self.settings.kd_temperature, dim=1)
        loss = -(counts.unsqueeze(1) * self.p_teacher[distinct] * log_p_student).sum() / users.shape[0]
        return loss / (1 - self.settings.kd_smooth_alpha) ** 2
