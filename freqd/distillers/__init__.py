"""Distillers: FreqD (and, next, the baselines) behind one interface, plus teacher loading."""

from __future__ import annotations

from freqd.distillers.base import Distiller
from freqd.distillers.freqd import FreqD, FreqDSettings
from freqd.distillers.teacher import load_teacher, teacher_tables

DISTILLERS: dict[str, type[Distiller]] = {"freqd": FreqD}


def get_distiller(name: str) -> type[Distiller]:
    """A distiller class by name (case-insensitive)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DISTILLERS:
        raise ValueError(f"unknown distiller {name!r}; available: {sorted(c.name for c in DISTILLERS.values())}")
    return DISTILLERS[key]


__all__ = ["DISTILLERS", "Distiller", "FreqD", "FreqDSettings", "get_distiller", "load_teacher", "teacher_tables"]
