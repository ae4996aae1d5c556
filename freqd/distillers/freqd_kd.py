"""FreqD + KD: FreqD's graph-filtered feature term plus KD's listwise response term.

On a batch of B triples:

    L = L_FreqD + μ · L_KD

with L_FreqD the loss of :mod:`freqd.distillers.freqd` and L_KD the loss of
:mod:`freqd.distillers.kd`, each configured by its own keys (``freqd_*``, ``projector*``;
``kd_guide``, ``kd_topk``, ``kd_temperature``, ``kd_smooth_*``) and each already divided by B. μ =
``kd_response_weight``; with FreqD's reference ``kd_weight`` 0.5, the default μ = 2 puts each term
at its own method's reference weight (λ_FreqD = 0.5, λ_KD = 1), so the combination adds no tuned
value. The authors' later code combines a FreqD-style feature term with a listwise term over the
teacher's top-K in the same way; its graph-smoothing of the scores is KD's ``kd_smooth_alpha``.

Each part's share is an ablation: KD alone (``kd: KD``), FreqD alone (``kd: FreqD``), and this
method at ``freqd_alpha: 0`` (plain feature distillation plus KD), which shows what the filter adds
on top of the response term.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from freqd.distillers.base import Distiller, StepTables
from freqd.distillers.freqd import FreqD, FreqDSettings
from freqd.distillers.kd import KD, KDSettings
from freqd.settings import Float


class FreqDKDSettings(FreqDSettings, KDSettings):
    """FreqD's and KD's keys, plus the response term's weight μ."""

    kd_response_weight: Float = Field(
        2.0, ge=0, description="μ in FreqD loss + μ·KD loss (FreqDKD); 2 with kd_weight 0.5 puts both terms at "
                               "their reference weights")


class FreqDKD(Distiller):
    """FreqD's feature term plus μ × KD's response term (see the module docstring)."""

    name = "FreqDKD"
    settings_cls = FreqDKDSettings

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        # Both parts read this distiller's teacher tables, not copies of them.
        self.feature = FreqD(config, self.t_tables, student, train_dataset)
        self.response = KD(config, self.t_tables, student, train_dataset)

    def on_epoch_start(self, epoch: int, student) -> None:
        self.feature.on_epoch_start(epoch, student)
        self.response.on_epoch_start(epoch, student)

    def epoch_log(self, student) -> dict[str, Any]:
        return self.feature.epoch_log(student)

    def forward(self, interaction, tables: StepTables) -> Tensor:
        feature = self.feature(interaction, tables)
        mu = self.settings.kd_response_weight
        return feature + mu * self.response(interaction, tables) if mu else feature
