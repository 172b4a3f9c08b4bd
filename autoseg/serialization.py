"""Frozen dataclasses <-> JSON, with type checks, and atomic file writes.

`to_json` turns a dataclass (tuples, nested dataclasses, dicts, Optionals) into JSON-safe data;
`from_json` rebuilds it and checks every field: an unknown key, a missing key or a value of the wrong
type raises a `ValueError` whose message names the path to the field (e.g. ``configurations[1].patch_size``).
Every artifact is written with `atomic_write_*`: to a temporary file beside the target, then renamed. The
temporary name is ``.<target name>.<8 random characters>.tmp[<ending>]`` (`TEMP_NAME`); a killed process can leave
one behind, and the owner of the folder removes such leftovers with `remove_stale_temps`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tempfile
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, Union, get_args, get_origin, get_type_hints

from autoseg.log import logger

T = TypeVar("T")


def to_json(obj: Any) -> Any:
    """Convert dataclasses / tuples / dicts / scalars into JSON-safe data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        kt, vt = get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__} {value!r}")
        return {_convert(kt, k, f"{where} key"): _convert(vt, v, f"{where}[{k!r}]") for k, v in value.items()}
    if origin is list:
        (it,) = get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(it, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


@functools.cache
def _fields_of(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """(type hints, fields) of a dataclass, resolved once: `get_type_hints` evaluates every annotation string, which
    made reading a preprocessed case's properties cost milliseconds (the data loader opens cases all the time)."""
    return get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from JSON data, checking keys and types; errors name the field path."""
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected an object, got {type(data).__name__}")
    hints, fields = _fields_of(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{label}: unknown key {unknown[0]!r} (known keys: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{label}: missing key {name!r}")
            continue
        kwargs[name] = _convert(hints[name], data[name], sub)
    return cls(**kwargs)


def dumps(data: Any) -> str:
    """Deterministic JSON text (keys in insertion order, 2-space indent, trailing newline)."""
    return json.dumps(to_json(data), indent=2, allow_nan=False) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what mkstemp(prefix=".<name>.", suffix=".tmp" or ".tmp<ending>") makes: 8 characters of [a-z0-9_] in between
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*$")


def is_temp_name(name: str) -> bool:
    """Whether `name` is a temporary file name made by `new_temp_file` (or the same mkstemp naming)."""
    return TEMP_NAME.match(name) is not None


def remove_stale_temps(folder: Path) -> int:
    """Delete the temporary files that killed writers left in `folder` (not its subfolders); return how many.

    Only regular files whose name matches `TEMP_NAME` are removed (no links, folders or other files). Call it only
    as the folder's owner (holding its lock, or as the single process writing it): another writer's temporary file
    in flight would be deleted too. A removal is logged ("<folder>: removed N stale temporary file(s) ...").
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed += 1
    if removed:
        plural = "s" if removed != 1 else ""
        logger.info(f"{folder}: removed {removed} stale temporary file{plural} left by an interrupted run")
    return removed


def new_temp_file(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """Create a hidden temporary file beside `path` with ordinary permissions (mkstemp alone gives 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    return fd, tmp


@contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends, removed if it raises.

    The one atomic-write mechanism of autoseg: a reader never sees half a file, and a killed writer leaves at most a
    ``.<name>.<8 chars>.tmp`` file (`remove_stale_temps`). For writers that need a file name (SimpleITK); the others
    use `atomic_write`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp_file(path, suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], fsync: bool = True) -> Path:
    """Write through `write(fh)` into a temporary file beside `path`, then rename it over `path` (`atomic_target`).

    `fsync`: flush the data to disk before the rename (the default: a power loss then leaves the old file or the
    new one). Preprocessed cases are written without it: they are a regenerable cache and fsync of every file made
    preprocessing about twice as slow (docs/benchmarks.md); after a power loss re-run with ``--overwrite``.
    """
    path = Path(path)
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write `payload` atomically (fsync, then rename over `path`)."""
    return atomic_write(path, lambda fh: fh.write(payload))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` (dataclass or JSON-safe) atomically as deterministic JSON."""
    return atomic_write_text(path, dumps(data))


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing file or invalid JSON raises ValueError naming the file and the position."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
