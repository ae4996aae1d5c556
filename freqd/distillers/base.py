"""The distiller interface shared by FreqD and the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from pydantic import Field
from torch import Tensor, nn

from freqd.distillers.teacher import TeacherTables, teacher_tables
from freqd.resolver import Registry, normalise
from freqd.settings import Float, Settings

#: Each method's reference values (``kd_weight``), ``<Name>.yaml``; packaged with freqd.
KD_PROPERTIES = Path(__file__).resolve().parents[1] / "properties" / "kd"

#: Every :class:`Distiller` subclass with a ``name`` (a mapping by :func:`registry_key`); a new
#: method registers itself by being defined in a module of ``freqd.distillers``.
REGISTRY: Registry[type[Distiller]] = Registry("distiller")

#: Case-, dash- and underscore-insensitive lookup key of a distiller name.
registry_key = normalise


class DistillerSettings(Settings):
    """The keys every distiller reads; each method's settings extend it with their own fields."""

    kd_weight: Float | None = Field(
        None, ge=0,
        description="λ in rec loss + λ·distiller loss; unset: the method's reference value "
                    "(freqd/properties/kd/<Name>.yaml, layered by freqd.Config)")


def id_tables(model) -> tuple[Tensor, Tensor] | None:
    """``model``'s ID embedding tables (``user_embedding``/``item_embedding`` weights), None without them."""
    users, items = (getattr(model, name, None) for name in ("user_embedding", "item_embedding"))
    if isinstance(users, nn.Embedding) and isinstance(items, nn.Embedding):
        return users.weight, items.weight
    return None


class StepTables(NamedTuple):
    """The student's tables for one training step, computed once and handed to the distiller.

    ``users``/``items`` are the final (scoring) tables, propagated for LightGCN; ``id_users``/
    ``id_items`` the ID embedding tables (the same as the final ones for BPR-MF), None for a model
    without ``user_embedding``/``item_embedding``.
    """

    users: Tensor
    items: Tensor
    id_users: Tensor | None = None
    id_items: Tensor | None = None

    @classmethod
    def of(cls, student) -> StepTables:
        """``student``'s tables; inside its ``one_step()`` the propagation is the one its loss also reads."""
        users, items = student.embeddings()
        return cls(users, items, *(id_tables(student) or ()))


class Distiller(nn.Module):
    """A knowledge-distillation loss with its own trainable modules (projectors, experts).

    Built as ``cls(config, teacher, student, train_dataset)`` once, before training. The base
    parses the method's settings (``settings_cls``, from flat config keys) into
    :attr:`settings` and keeps the frozen teacher's final tables as the non-persistent buffers
    ``t_users``/``t_items``, so neither the optimiser nor any checkpoint holds the teacher; a
    method then precomputes what else it needs (top-N rankings, graphs, popularity). The trainer
    calls :meth:`on_epoch_start` before each epoch (resampling, schedules, the student's current
    rankings), then ``distiller(interaction, tables)`` on every batch with the student's
    :class:`StepTables` of that step, so the student is propagated once per step; the result is
    added to the recommendation loss with weight :attr:`kd_weight`.

    Losses are the reference's sums over batch entities divided by the number of training
    triples in the batch, so reference ``kd_weight`` values carry over to RecBole's mean-reduced
    recommendation loss unchanged. Adding a method is a settings class and a loss.
    """

    name: ClassVar[str] = ""
    settings_cls: ClassVar[type[DistillerSettings]] = DistillerSettings
    # Buffers (registered in __init__), declared for the type checker.
    t_users: Tensor
    t_items: Tensor

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
                raise TypeError(f"two distillers are named {cls.name!r}: {REGISTRY[cls.name]} and {cls}")
            REGISTRY.register(cls.name, cls)

    def __init__(self, config, teacher, student, train_dataset) -> None:
        """``teacher`` is the frozen teacher model, or the :class:`~freqd.distillers.teacher.TeacherTables`
        of one (a method built inside another shares its tables)."""
        super().__init__()
        self.settings = self.settings_cls.from_config(config, where=self.name or type(self).__name__)
        users, items = teacher_tables(teacher)
        self.register_buffer("t_users", users, persistent=False)
        self.register_buffer("t_items", items, persistent=False)
        self.USER_ID, self.ITEM_ID, self.NEG_ITEM_ID = student.USER_ID, student.ITEM_ID, student.NEG_ITEM_ID

    @property
    def t_tables(self) -> TeacherTables:
        """The teacher's final tables as this distiller holds them (on its device)."""
        return TeacherTables(self.t_users, self.t_items)

    @property
    def kd_weight(self) -> float:
        """``kd_weight`` as configured, else this method's reference value (its properties YAML)."""
        if self.settings.kd_weight is not None:
            return self.settings.kd_weight
        import yaml

        return float(yaml.safe_load(self.defaults_file().read_text(encoding="utf-8"))["kd_weight"])

    @classmethod
    def defaults_file(cls) -> Path:
        """``freqd/properties/kd/<Name>.yaml``: the method's reference ``kd_weight``, layered by ``freqd.Config``."""
        path = KD_PROPERTIES / f"{cls.name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"distiller {cls.name!r} has no defaults file {path}")
        return path

    def on_epoch_start(self, epoch: int, student) -> None:
        """Hook before each training epoch; ``student`` may be scored here (its rankings), never kept."""

    def epoch_log(self, student) -> dict[str, Any]:
        """Extra numbers for this epoch's row of metrics.csv (e.g. the filter's α, spectral energy)."""
        return {}

    def forward(self, interaction, tables: StepTables) -> Tensor:  # pragma: no cover - interface
        """The batch loss from the student's tables of this step (never ``student.embeddings()``)."""
        raise NotImplementedError
