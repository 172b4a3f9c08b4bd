"""Worker counts for the stages that read raw cases (verify, fingerprint), sized on the largest case's header."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autoseg.data.dataset import Case
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_header
from autoseg.errors import AutosegError
from autoseg.resources import COPIES, case_bytes, choose_workers, describe


def largest_case(file_groups: Sequence[Sequence[Path]]) -> tuple[tuple[int, ...], int, Geometry] | None:
    """(shape (z, y, x), channels, geometry) of the case (its channel files) with the most bytes on disk, from its
    first file's header; None without cases or when that header cannot be read (the stage reading the case reports
    it, with its name)."""
    if not file_groups:
        return None
    big = max(file_groups, key=lambda files: sum(p.stat().st_size for p in files if p.is_file()))
    try:
        shape, components, geometry = read_header(big[0])
    except (AutosegError, OSError):
        return None
    return shape, max(len(big), components), geometry


def workers_for_cases(requested: int, cases: Sequence[Case], stage: str, available: float | None = None) -> int:
    """Worker count for reading `cases` (verify, fingerprint): sized on the largest case's header."""
    if requested <= 1:
        return 1
    found = largest_case([case.images for case in cases])
    if found is None:
        return requested
    shape, channels, _ = found
    return choose_workers(requested, case_bytes(shape, channels, COPIES[stage]), describe(shape, channels), available,
                          stage)  # fmt: skip
