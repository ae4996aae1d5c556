"""The distiller interface shared by FreqD and the baselines."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn


class Distiller(nn.Module):
    """A knowledge-distillation loss with its own trainable modules (projectors, experts).

    The trainer calls :meth:`on_epoch_start` before each epoch (per-epoch resampling,
    schedules), then ``distiller(interaction, student)`` on every batch; the result is added to
    the student's recommendation loss with weight ``kd_weight``. The distiller's parameters are
    optimised with the student's; the frozen teacher's tables are non-persistent buffers, so
    neither the optimiser nor any checkpoint holds the teacher.

    ``needs`` says what the distiller reads from the teacher: ``"embeddings"``, ``"scores"`` or
    ``"rankings"``. Losses are the reference's sums over batch entities divided by the number of
    training triples in the batch, so reference ``kd_weight`` values carry over to RecBole's
    mean-reduced recommendation loss unchanged.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before each training epoch."""

    def epoch_log(self, student) -> dict[str, Any]:
        """Extra numbers for this epoch's row of metrics.csv (e.g. the filter's α, spectral energy)."""
        return {}

    def forward(self, interaction, student) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError
