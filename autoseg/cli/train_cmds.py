"""Commands: train."""

from __future__ import annotations


def add_parsers(sub, common, fmt) -> None:
    pass
