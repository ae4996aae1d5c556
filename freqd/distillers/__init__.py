"""Distillers: FreqD and the baselines behind one interface.

Each method is one module here defining a :class:`Distiller` subclass with a ``name`` and a
``settings_cls`` (a :class:`DistillerSettings` subclass: its config keys); modules are imported on
first lookup, so adding a method touches that module and its ``freqd/properties/kd/<Name>.yaml``
(its reference ``kd_weight``) only.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from freqd.distillers.base import REGISTRY, Distiller, DistillerSettings, StepTables
from freqd.distillers.freqd import FreqD, FreqDSettings
from freqd.distillers.teacher import TeacherTables, teacher_tables
from freqd.resolver import Registry
from freqd.settings import Settings

if TYPE_CHECKING:
    DISTILLERS: dict[str, type[Distiller]]  # every registered distiller by registry key (module __getattr__)

_INFRASTRUCTURE = {"base", "teacher", "projectors", "rankings", "sampling", "feature_kd"}


def _discover() -> Registry[type[Distiller]]:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return REGISTRY


def available() -> list[str]:
    """The names of all distillers, sorted."""
    return sorted(cls.name for cls in _discover().values())


def get_distiller(name: str | type[Distiller]) -> type[Distiller]:
    """A distiller class by name (case-, dash- and underscore-insensitive); a class passes through."""
    return _discover().resolve(name)


def distiller_settings(kd: str | None) -> type[Settings] | None:
    """The settings class of distiller ``kd`` (its ``settings_cls``), None without one."""
    if kd is None:
        return None
    cls = getattr(get_distiller(kd), "settings_cls", None)
    return cls if isinstance(cls, type) and issubclass(cls, Settings) else None


def __getattr__(name: str):
    if name == "DISTILLERS":
        return dict(_discover())
    raise AttributeError(name)


__all__ = ["DISTILLERS", "Distiller", "DistillerSettings", "FreqD", "FreqDSettings", "StepTables", "TeacherTables",
           "available", "distiller_settings", "get_distiller", "teacher_tables"]
