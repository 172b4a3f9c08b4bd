"""Worker counts for the stages that read raw cases (verify, fingerprint), sized on the largest case's header."""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.data.dataset import Case
from autoseg.data.image_io import read_header
from autoseg.errors import AutosegError
from autoseg.resources import COPIES, case_bytes, choose_workers, describe


def largest_case(cases: Sequence[Case]) -> tuple[tuple[int, ...], int] | None:
    """(shape (z, y, x), channels) of the case with the most image bytes on disk (header read only), or None."""

    def size(case: Case) -> int:
        return sum(p.stat().st_size for p in case.images if p.is_file())

    if not cases:
        return None
    big = max(cases, key=size)
    try:
        shape, components, _ = read_header(big.images[0])
    except (AutosegError, OSError):  # an unreadable file is reported by the stage itself, with its name
        return None
    return shape, max(len(big.images), components)


def workers_for_cases(requested: int, cases: Sequence[Case], stage: str, available: float | None = None) -> int:
    """Worker count for reading `cases` (verify, fingerprint): sized on the largest case's header."""
    if requested <= 1:
        return 1
    found = largest_case(cases)
    if found is None:
        return requested
    shape, channels = found
    return choose_workers(requested, case_bytes(shape, channels, COPIES[stage]), describe(shape, channels), available,
                          stage)  # fmt: skip
