"""Shared type aliases."""

from __future__ import annotations

from typing import Union

Shape = tuple[int, ...]
Spacing = tuple[float, ...]
JSON = Union[None, bool, int, float, str, list["JSON"], dict[str, "JSON"]]  # noqa: UP007 (recursive alias)
