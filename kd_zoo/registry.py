"""One registry pattern for methods, scorers and selectors: lowercase names, duplicates are errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def close_matches(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """Names in `candidates` that look like `name` (for 'did you mean' messages)."""
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)


class UnknownNameError(LookupError):
    """A name that is not in a registry; the message lists close matches and every known name."""


class Registry(Generic[T]):
    """A name -> object table with a decorator to fill it.

    Example:
        >>> METHODS = Registry("method")
        >>> @METHODS.register("toy")
        ... class Toy: ...
        >>> METHODS.get("toy") is Toy
        True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if name != name.lower() or not name.replace("_", "").isalnum():
            raise ValueError(f"{self.kind} names are lowercase identifiers, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"duplicate {self.kind} name {name!r}: already registered as {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            hint = close_matches(name, list(self._entries))
            hint_text = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint_text} Known: {', '.join(sorted(self._entries))}."
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
