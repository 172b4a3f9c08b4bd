"""A tiny name -> object registry with helpful unknown-name errors and explicit plugin imports."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from autoseg.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (functions, classes). `get` of an unknown name lists the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as a decorator: ``@networks.register("unet")``."""

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Remove `name` (a KeyError if it is not registered); lets a plugin or a test undo its registration."""
        del self._items[name]

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}. Known: {', '.join(sorted(self._items)) or 'none'}.{hint} "
                f"A {self.kind} from your own code must be imported first: pass --plugin YOUR_MODULE."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def import_plugins(modules: Iterable[str]) -> list[str]:
    """Import user plugin modules (they register their components on import); returns the names imported."""
    done = []
    for mod in modules:
        mod = mod.strip()
        if not mod:
            continue
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ConfigError(f"plugin module {mod!r} cannot be imported ({exc}); install it or fix --plugin") from None
        done.append(mod)
    return done
