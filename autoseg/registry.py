"""A tiny name -> object registry with helpful unknown-name errors, keyword arguments checked against the registered
component's signature, and explicit plugin imports (recorded, so plans can name the plugins that made them)."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from autoseg.errors import ConfigError

T = TypeVar("T")

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_POSITIONAL_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


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
        except KeyError as exc:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}. Known: {', '.join(sorted(self._items)) or 'none'}.{hint} "
                f"A {self.kind} from your own code must be imported first: pass --plugin YOUR_MODULE."
            ) from exc

    def create(self, name: str, /, *args: Any, kwargs: Mapping[str, Any] | None = None, **fixed: Any) -> Any:
        """Call the component registered as `name` with autoseg's `args` and `fixed` keywords plus the user's
        `kwargs` (from the plans or ``--set ..._kwargs.KEY=VALUE``), checked first by `check_kwargs`."""
        item = self.get(name)
        extra = dict(kwargs or {})
        check_kwargs(f"{self.kind} {name!r}", item, args, fixed, extra)
        return item(*args, **fixed, **extra)  # type: ignore[operator]

    def name_of(self, obj: object) -> str | None:
        """The first name `obj` is registered under, None if it is not registered."""
        return next((name for name, item in self._items.items() if item is obj), None)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def keyword_names(fn: Callable[..., Any], n_positional: int = 0, taken: Iterable[str] = ()) -> list[str] | None:
    """Keyword arguments `fn` accepts beyond its first `n_positional` arguments and the `taken` names; None when it
    takes any keyword (``**kwargs``) or has no signature to inspect."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    positional = [p.name for p in params if p.kind in _POSITIONAL_KINDS][:n_positional]
    skip = set(positional) | set(taken)
    return [p.name for p in params if p.kind in _KEYWORD_KINDS and p.name not in skip]


def check_kwargs(
    component: str,
    fn: Callable[..., Any],
    args: Sequence[Any],
    fixed: Mapping[str, Any],
    kwargs: Mapping[str, Any],
) -> None:
    """Raise ConfigError naming `component` and the keyword when `kwargs` do not fit `fn(*args, **fixed, **kwargs)`:
    an unknown keyword, one that autoseg already passes, or a required argument left out."""
    allowed = keyword_names(fn, len(args), fixed)
    accepts = ", ".join(allowed) if allowed else "none"
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{component}: {key!r} is not a keyword argument name")
        if key in fixed:
            raise ConfigError(f"{component}: keyword argument {key!r} is set by autoseg and cannot be given in kwargs")
        if allowed is not None and key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{component} has no keyword argument {key!r}; it accepts: {accepts}.{hint}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **fixed, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{component}: {exc} (its keyword arguments: {accepts})") from exc


# ---- plugins -------------------------------------------------------------------------------------------------------
_imported: list[str] = []  # plugin modules imported by import_plugins, in order; plans record them


def import_plugins(modules: Iterable[str]) -> list[str]:
    """Import user plugin modules (they register their components on import); returns the names imported.

    Every module imported is remembered (`imported_plugins`), so that plans and training runs can record it."""
    done = []
    for mod in modules:
        mod = mod.strip()
        if not mod:
            continue
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ConfigError(f"plugin module {mod!r} cannot be imported ({exc}); install it or fix --plugin") from exc
        if mod not in _imported:
            _imported.append(mod)
        done.append(mod)
    return done


def imported_plugins() -> tuple[str, ...]:
    """The plugin modules imported so far (``--plugin`` / AUTOSEG_PLUGINS), in import order."""
    return tuple(_imported)


def import_recorded_plugins(modules: Iterable[str], where: str) -> list[str]:
    """Import the plugin modules a file recorded (`where` names it, e.g. the plans file) that are not imported yet.

    A module that cannot be imported is a ConfigError naming it and `where`."""
    done = []
    for mod in modules:
        if mod in _imported:
            continue
        try:
            done += import_plugins([mod])
        except ConfigError as exc:
            raise ConfigError(
                f"{where} was made with plugin module {mod!r}, which cannot be imported here ({exc.__cause__}); "
                f"install it or put it on PYTHONPATH (its components are needed to use these plans)"
            ) from exc
    return done
