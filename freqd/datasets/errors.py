"""The one exception type raised for malformed data files."""

from __future__ import annotations

import os
from typing import Any

_UNSET: Any = object()


class DataFormatError(ValueError):
    """A data file (or the data about to be written to one) is malformed.

    The message always names the file, the 1-based line number when it is known, the
    column when it is known, and the offending value, e.g.
    ``train.txt, line 3: negative id (value '-1')``. The parts are also kept as attributes
    (``path``, ``line``, ``column``, ``value``, ``reason``) so callers can inspect them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        reason: str,
        *,
        line: int | None = None,
        column: str | None = None,
        value: Any = _UNSET,
    ) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.line = line
        self.column = column
        self.value = None if value is _UNSET else value
        self._has_value = value is not _UNSET
        where = self.path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        message = f"{where}: {reason}"
        if self._has_value:
            message += f" (value {value!r})"
        super().__init__(message)

    def __reduce__(self) -> tuple:
        """Keep the exception picklable despite the keyword-only constructor."""
        kwargs = {"line": self.line, "column": self.column}
        if self._has_value:
            kwargs["value"] = self.value
        return (_rebuild, (self.path, self.reason, kwargs))


def _rebuild(path: str, reason: str, kwargs: dict) -> DataFormatError:
    return DataFormatError(path, reason, **kwargs)
