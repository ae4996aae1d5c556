"""Projectors from the student space R^{d_S} to the teacher space R^{d_T} (docs/method.md), and their keys."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from pydantic import Field
from torch import Tensor, nn

from freqd.distillers.base import DistillerSettings
from freqd.resolver import Registry
from freqd.settings import Float, Int

Projector = Literal["linear", "mlp", "experts"]
PROJECTORS = get_args(Projector)
#: The projector classes by name; each builds from the common options with ``from_options``.
PROJECTOR_CLASSES: Registry[type[LinearProjector | MLPProjector | ExpertProjector]] = Registry("projector")


class ProjectorSettings(DistillerSettings):
    """The projector keys of the methods that map the student into the teacher space (FreqD, FitNet)."""

    projector: Projector = Field(
        "mlp", description="student → teacher map: mlp (Linear → ReLU → Linear), linear, or experts (mean of MLPs)")
    projector_bias: bool = Field(False, description="give the linear projector a bias")
    projector_hidden: Int | None = Field(
        None, ge=1, description="hidden width of the mlp/experts projectors; unset: the method's default")
    projector_experts: Int = Field(5, ge=1, description="number of MLPs the experts projector averages")
    projector_dropout: Float = Field(0.0, ge=0, lt=1, description="dropout before each layer of the MLP projectors")


@PROJECTOR_CLASSES.register("linear")
class LinearProjector(nn.Module):
    """x ↦ xW (+ b). Without bias, filtering commutes with it: H·P(S) = P(H·S)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=bias)

    @classmethod
    def from_options(cls, d_in: int, d_out: int, hidden: int, experts: int, dropout: float,
                     bias: bool) -> LinearProjector:
        return cls(d_in, d_out, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


@PROJECTOR_CLASSES.register("mlp")
class MLPProjector(nn.Module):
    """Dropout → Linear(d_in → hidden) → ReLU → Dropout → Linear(hidden → d_out)."""

    def __init__(self, d_in: int, d_out: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
        )

    @classmethod
    def from_options(cls, d_in: int, d_out: int, hidden: int, experts: int, dropout: float,
                     bias: bool) -> MLPProjector:
        return cls(d_in, d_out, hidden, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@PROJECTOR_CLASSES.register("experts")
class ExpertProjector(nn.Module):
    """Mean of E MLP experts (the current reference FreqD projector: E = 5, hidden d_T, dropout 0.2)."""

    def __init__(self, d_in: int, d_out: int, hidden: int, experts: int, dropout: float = 0.0) -> None:
        super().__init__()
        if experts < 1:
            raise ValueError(f"projector_experts must be >= 1, got {experts}")
        self.experts = nn.ModuleList(MLPProjector(d_in, d_out, hidden, dropout) for _ in range(experts))

    @classmethod
    def from_options(cls, d_in: int, d_out: int, hidden: int, experts: int, dropout: float,
                     bias: bool) -> ExpertProjector:
        return cls(d_in, d_out, hidden, experts, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([expert(x) for expert in self.experts]).mean(0)


def build_projector(kind: str | type[LinearProjector | MLPProjector | ExpertProjector], d_in: int, d_out: int,
                    hidden: int | None = None, experts: int = 5, dropout: float = 0.0, bias: bool = False) -> nn.Module:
    """A projector by name (or class, see :data:`PROJECTOR_CLASSES`); ``hidden`` defaults to d_out (the
    reference expert width). Each projector takes the options it uses and ignores the others."""
    cls = PROJECTOR_CLASSES.resolve(kind)
    return cls.from_options(d_in, d_out, int(hidden or d_out), experts, dropout, bias)
