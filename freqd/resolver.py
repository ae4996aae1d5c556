"""One name → component resolver for the pluggable kinds: models, distillers, projectors, α schedules.

After torch-geometric's ``torch_geometric.nn.resolver``: a name resolves case-, dash- and
underscore-insensitively (``"LightGCN"``, ``"light-gcn"`` and ``"light_gcn"`` are one name); a
class or an instance passes through unchanged; an unknown name is a ``ValueError`` naming the kind
and the query, with the choices and a did-you-mean suggestion. A bottom-layer module: it imports
nothing from freqd.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, overload

T = TypeVar("T")


def normalise(name: str) -> str:
    """The lookup key of a name: lower case, without '-' and '_'."""
    return name.lower().replace("-", "").replace("_", "")


class Registry(Mapping[str, T]):
    """The components of one ``kind`` by name; read as a mapping, its keys are the :func:`normalise`d names.

    ``fallback(name)`` is asked for a name not registered (None: unknown); ``note`` ends the error message.
    """

    def __init__(self, kind: str, *, fallback: Callable[[str], T | None] | None = None, note: str = "") -> None:
        self.kind = kind
        self._fallback = fallback
        self._note = note
        self._entries: dict[str, T] = {}
        self._names: dict[str, str] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that does. Returns what it registers."""
        if obj is None:
            return lambda target: self.register(name, target)
        key = normalise(name)
        if key in self._entries and self._entries[key] is not obj:
            raise ValueError(f"two {self.kind}s are named {name!r}: {self._entries[key]!r} and {obj!r}")
        self._entries[key], self._names[key] = obj, name
        return obj

    def resolve(self, query: str | T) -> T:
        """The component named ``query``; a class or an instance (anything not a string) passes through."""
        if not isinstance(query, str):
            return query
        key = normalise(query)
        if key in self._entries:
            return self._entries[key]
        found = self._fallback(query) if self._fallback is not None else None
        if found is None:
            raise self.unknown(query)
        return found

    def unknown(self, query: str) -> ValueError:
        """The error for an unknown name: the kind, the query, the choices, a close registered name if any."""
        close = difflib.get_close_matches(normalise(query), list(self._entries), n=1, cutoff=0.6)
        hint = f"; did you mean {self._names[close[0]]!r}?" if close else ""
        note = f"; {self._note}" if self._note else ""
        return ValueError(f"unknown {self.kind} {query!r}; available: {self.names()}{hint}{note}")

    def names(self) -> list[str]:
        """The registered names as given, sorted case-insensitively."""
        return sorted(self._names.values(), key=str.lower)

    def __getitem__(self, name: str) -> T:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._entries[normalise(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


__all__ = ["Registry", "normalise"]
