"""The distiller interface shared by FreqD and the baselines."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

from torch import Tensor, nn

#: Every :class:`Distiller` subclass with a ``name``, by :func:`registry_key`; a new method
#: registers itself by being defined in a module of ``freqd.distillers``.
REGISTRY: dict[str, type[Distiller]] = {}


def registry_key(name: str) -> str:
    """Case-, dash- and underscore-insensitive lookup key of a distiller name."""
    return name.lower().replace("-", "").replace("_", "")


def settings_from_config(cls, config):
    """A settings dataclass from flat config keys; a missing key (None) keeps the field's default.

    Values are coerced to the field's type (``int``, ``float`` or ``str``): 100.0 is accepted for
    an int, 100.5 or "x" is a ValueError naming the key.
    """
    values = {}
    for f in fields(cls):
        value = config[f.name]
        if value is not None:
            values[f.name] = _coerce(f.name, f.type if isinstance(f.type, str) else f.type.__name__, value)
    return cls(**values)


def _coerce(key: str, type_name: str, value):
    try:
        if type_name == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {'an integer' if type_name == 'int' else 'a number'}, got {value!r}") from None
    if type_name == "str" and not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def check(conditions: list[tuple[bool, str]]) -> None:
    """Raise a ValueError with the message of the first failed condition."""
    for ok, message in conditions:
        if not ok:
            raise ValueError(message)


class Distiller(nn.Module):
    """A knowledge-distillation loss with its own trainable modules (projectors, experts).

    Built as ``cls(config, teacher, student, train_dataset)`` once, before training: that is
    where a method precomputes what it needs from the frozen teacher (its tables, its top-N
    rankings via :func:`freqd.distillers.rankings.teacher_topk`, item popularity). The trainer
    calls :meth:`on_epoch_start` before each epoch (per-epoch resampling,
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

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            key = registry_key(cls.name)
            if key in REGISTRY and REGISTRY[key] is not cls:
                raise TypeError(f"two distillers are named {cls.name!r}: {REGISTRY[key]} and {cls}")
            REGISTRY[key] = cls

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before each training epoch."""

    def epoch_log(self, student) -> dict[str, Any]:
        """Extra numbers for this epoch's row of metrics.csv (e.g. the filter's α, spectral energy)."""
        return {}

    def forward(self, interaction, student) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError
