"""Distillers: FreqD and the baselines behind one interface.

Each method is one module here defining a :class:`Distiller` subclass with a ``name``; modules
are imported on first lookup, so adding a method touches that module and its YAML in
``configs/kd/`` only.
"""

from __future__ import annotations

import importlib
import pkgutil

from freqd.distillers.base import REGISTRY, Distiller, registry_key
from freqd.distillers.freqd import FreqD, FreqDSettings
from freqd.distillers.teacher import teacher_tables

_INFRASTRUCTURE = {"base", "teacher", "projectors", "rankings", "sampling"}


def _discover() -> dict[str, type[Distiller]]:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return REGISTRY


def available() -> list[str]:
    """The names of all distillers, sorted."""
    return sorted(cls.name for cls in _discover().values())


def get_distiller(name: str) -> type[Distiller]:
    """A distiller class by name (case-, dash- and underscore-insensitive)."""
    registry = _discover()
    key = registry_key(name)
    if key not in registry:
        raise ValueError(f"unknown distiller {name!r}; available: {available()}")
    return registry[key]


def __getattr__(name: str):
    if name == "DISTILLERS":
        return dict(_discover())
    raise AttributeError(name)


__all__ = ["DISTILLERS", "Distiller", "FreqD", "FreqDSettings", "available", "get_distiller", "teacher_tables"]
