"""Typed settings: every component declares its config keys once, as fields of a :class:`Settings`
model (type, range, choices, one-line doc), and they are validated once, before any data is loaded.

Config keys stay flat and RecBole-style (``freqd_alpha``, ``epochs``): a component's settings are
the keys named like its fields, read from a RecBole ``Config`` (or any mapping) by
:meth:`Settings.from_config`. Validation is pydantic's (lax mode: ``"3"`` and ``3.0`` are the integer
3, ``2.5`` is not); numeric fields are :data:`Int` / :data:`Float`, which refuse booleans and
inf/NaN; an error names the key and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


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


def _not_bool(value: Any) -> Any:
    """Pydantic's lax mode reads True as 1; a boolean where a number belongs is a mistake."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


#: Numbers of a settings field: lax (``"3"`` and ``3.0`` are 3), but never a boolean, never inf/NaN.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


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
        """``cls(**values)`` with a :class:`SettingsError` naming every invalid key and value."""
        try:
            return cls(**dict(values))
        except ValidationError as exc:
            raise SettingsError(describe(exc, where)) from None
