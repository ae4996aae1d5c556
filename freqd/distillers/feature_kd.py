"""Pieces shared by the feature-based baselines (DE, HTD, and PCKD through DE).

* :func:`geometric_anneal`: the Gumbel temperature schedule of DE-RRD and HTD.
* :class:`GumbelExperts`: DE's mixture of MLP experts with a Gumbel-softmax selector driven by the
  teacher embedding (also HTD's group assignment).
* :class:`ExpertPairDistiller`: a user and an item :class:`GumbelExperts` whose temperature anneals
  every epoch, with their usage log: DE's experts and HTD's groups.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from freqd.distillers.base import Distiller


def geometric_anneal(epoch: int, start: float, end: float, epochs: int) -> float:
    """τ(e) = max(end, start·(end/start)^(e/epochs)): ``start`` at epoch 0, ``end`` from ``epochs`` on."""
    return max(end, start * (end / start) ** (epoch / epochs))


def check_annealing(prefix: str, start: float, end: float) -> None:
    """The temperature anneals downwards: ``<prefix>_tau_end`` <= ``<prefix>_tau_start``."""
    if end > start:
        raise ValueError(f"{prefix}_tau_end={end} must be <= {prefix}_tau_start={start}: the temperature anneals down")


def anneal_epochs(value: int | None, config, key: str) -> int:
    """The annealing length: ``value``, else the run's ``epochs`` (as the reference does)."""
    epochs = value if value is not None else config["epochs"]
    if epochs is None or int(epochs) < 1:
        raise ValueError(
            f"{key}={value!r} and epochs={config['epochs']!r}: the temperature schedule needs a length >= 1")
    return int(epochs)


class StackedMLP(nn.Module):
    """M independent MLPs d_in → hidden → ReLU → d_out, evaluated in one batched matmul.

    Initialised like ``nn.Linear`` (weights and biases U(±1/√fan_in)), i.e. like M separate
    two-layer experts of the reference.
    """

    def __init__(self, experts: int, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(experts, d_in, hidden))
        self.b1 = nn.Parameter(torch.empty(experts, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(experts, hidden, d_out))
        self.b2 = nn.Parameter(torch.empty(experts, 1, d_out))
        for weight, bias, fan_in in ((self.w1, self.b1, d_in), (self.w2, self.b2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(n, d_in) → (M, n, d_out)."""
        return torch.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2


class GumbelExperts(nn.Module):
    """Σ_m a_m·E_m(s), a = softmax((log(softmax(W t + b) + 1e-10) + g) / τ), g ~ Gumbel(0, 1).

    The selector sees the frozen teacher row t, the experts the student row s (DE-RRD, Kang et
    al. 2020; HTD's group assignment). As τ → 0 the selection is one-hot: each entity is
    reconstructed by one expert. Training-time selections are counted (argmax) for
    :meth:`usage_entropy`.
    """

    def __init__(self, d_student: int, d_teacher: int, experts: int, hidden: int) -> None:
        super().__init__()
        self.n_experts = experts
        self.experts = StackedMLP(experts, d_student, hidden, d_teacher)
        self.selector = nn.Linear(d_teacher, experts)
        self._counts: Tensor | None = None

    def probabilities(self, t: Tensor) -> Tensor:
        """The selector's distribution over experts, (n, M)."""
        return torch.softmax(self.selector(t), dim=1)

    @torch.no_grad()
    def assign(self, t: Tensor) -> Tensor:
        """The most probable expert (group) of each teacher row, without noise."""
        return self.selector(t).argmax(1)

    def selection(self, t: Tensor, tau: float) -> Tensor:
        """Gumbel-softmax weights (n, M) at temperature ``tau``."""
        return F.gumbel_softmax(torch.log(self.probabilities(t) + 1e-10), tau=tau, dim=1)

    def forward(self, s: Tensor, t: Tensor, tau: float, track: bool = True) -> Tensor:
        """The mixture's reconstruction of ``t`` from ``s``, (n, d_T)."""
        weights = self.selection(t, tau)
        if track and self.training:
            self._count(weights)
        return torch.einsum("nm,mnd->nd", weights, self.experts(s))

    @torch.no_grad()
    def _count(self, weights: Tensor) -> None:
        counts = torch.bincount(weights.argmax(1), minlength=self.n_experts)
        self._counts = counts if self._counts is None else self._counts + counts

    def reset_usage(self) -> None:
        self._counts = None

    @torch.no_grad()
    def usage_entropy(self) -> float:
        """Entropy of the experts' share of selections since the last reset, / log M (1 = uniform)."""
        if self._counts is None or self.n_experts == 1:
            return float("nan")
        p = self._counts.double() / self._counts.sum()
        return float(-(p * torch.log(p.clamp_min(1e-300))).sum() / math.log(self.n_experts))


class ExpertPairDistiller(Distiller):
    """A distiller with a user and an item :class:`GumbelExperts` annealed together (DE, HTD).

    A subclass builds the pair with :meth:`_expert_pair` and names it in :meth:`expert_pair`; τ then
    follows :func:`geometric_anneal` from epoch to epoch, and :meth:`epoch_log` reports τ and each
    mixture's usage entropy under ``log_prefix``.
    """

    log_prefix: ClassVar[str] = ""

    def _expert_pair(self, config, student, experts: int, hidden: int | None, tau_start: float, tau_end: float,
                     anneal: int | None) -> tuple[GumbelExperts, GumbelExperts]:
        """User and item mixtures of ``experts`` MLPs of width ``hidden`` (default (d_S + d_T) // 2)."""
        d_s, d_t = student.embedding_size, self.t_users.shape[1]
        hidden = hidden or (d_s + d_t) // 2
        self.tau_start, self.tau_end = tau_start, tau_end
        self.anneal_epochs = anneal_epochs(anneal, config, f"{self.log_prefix}_anneal_epochs")
        self.tau = tau_start
        return GumbelExperts(d_s, d_t, experts, hidden), GumbelExperts(d_s, d_t, experts, hidden)

    def expert_pair(self) -> tuple[GumbelExperts, GumbelExperts]:  # pragma: no cover - interface
        """The (user, item) mixtures."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int, student) -> None:
        self.tau = geometric_anneal(epoch, self.tau_start, self.tau_end, self.anneal_epochs)
        for mixture in self.expert_pair():
            mixture.reset_usage()

    def epoch_log(self, student) -> dict[str, Any]:
        users, items = self.expert_pair()
        prefix = self.log_prefix
        return {f"{prefix}_tau": self.tau, f"{prefix}_user_usage_entropy": users.usage_entropy(),
                f"{prefix}_item_usage_entropy": items.usage_entropy()}
