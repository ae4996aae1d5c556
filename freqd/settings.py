"""Typed settings: every component declares its config keys once, as fields of a :class:`Settings`
model (type, range, choices, one-line doc), and they are validated once, before any data is loaded.

Config keys stay flat and RecBole-style (``freqd_alpha``, ``epochs``): a component's settings are
the keys named like its fields, read from a RecBole ``Config`` (or any mapping) by
:meth:`Settings.from_config`. Validation is pydantic's (lax mode: ``"3"`` and ``3.0`` are the integer
3, ``2.5`` is not); an error names the key and the value.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class SettingsError(ValueError):
    """A setting with a wrong type or out of range; the message names the key and the value."""


def _get(config: Any, key: str) -> Any:
    """``config[key]``, None when absent (RecBole's Config returns None for unknown keys)."""
    if isinstance(config, Mapping):
        return config.get(key)
    try:
        return config[key]
    except KeyError:
        return None


def describe(exc: ValidationError, where: str = "") -> str:
    """One line per invalid key: ``key=value: reason``, prefixed by ``where`` when given.

    A rule over several keys (a model validator) has no single key: its message names the keys.
    """
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            key = ".".join(str(part) for part in error["loc"])
            lines.append(f"{key}={error.get('input')!r}: {message}")
        else:
            lines.append(message)
    prefix = f"{where}: " if where else ""
    return prefix + "; ".join(lines)


def _numbers_only(annotation: Any) -> bool:
    """Whether a field holds numbers and never a boolean (``int``, ``float | None``, constrained)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _numbers_only(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_numbers_only(a) for a in args)
    return annotation in (int, float)


class Settings(BaseModel):
    """Base of every component's settings: frozen, unknown fields refused, errors naming the key."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @classmethod
    def keys(cls) -> frozenset[str]:
        """The config keys this component reads."""
        return frozenset(cls.model_fields)

    @classmethod
    def from_config(cls, config: Any, where: str = ""):
        """The settings from flat config keys; an absent (None) key keeps the field's default."""
        values = {}
        for key in cls.model_fields:
            value = _get(config, key)
            if value is not None:
                values[key] = value
        return cls.validate_values(values, where)

    @classmethod
    def validate_values(cls, values: Mapping[str, Any], where: str = ""):
        """``cls(**values)`` with a :class:`SettingsError` naming every invalid key and value.

        A boolean where a number belongs is refused (pydantic's lax mode would read True as 1).
        """
        for key, value in values.items():
            field = cls.model_fields.get(key)
            if isinstance(value, bool) and field is not None and _numbers_only(field.annotation):
                raise SettingsError(f"{where + ': ' if where else ''}{key}={value!r}: expected a number, not a boolean")
        try:
            return cls(**dict(values))
        except ValidationError as exc:
            raise SettingsError(describe(exc, where)) from None
