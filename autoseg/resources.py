"""Memory-aware worker counts: how many cases can be processed at once without the workers being killed.

A worker holds one case at a time; its peak memory is roughly the float32 image times the number of copies alive
at once (read, cropped, normalised, resampled output, label and its one-hot resampling). `choose_workers` lowers
the requested count so that ``workers x per-worker bytes <= MARGIN x available memory`` and says so in the log,
e.g. "512x512x1000 image (1 channel) needs ~12.6 GB per worker; using 1 worker instead of 2 (14.0 GB available)".
A run with fewer workers is slower, never killed for memory it could have known about.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from autoseg.log import logger

MARGIN = 0.8  # fraction of the available memory the workers may use together
COPIES = {"preprocess": 6, "fingerprint": 3, "verify": 3, "predict": 4}  # float32 image copies at the peak
MEMINFO = Path("/proc/meminfo")
GB = 1024**3


def case_bytes(shape: Sequence[int], channels: int = 1, copies: float = COPIES["preprocess"], zoom: float = 1.0) -> int:
    """Peak bytes of one worker for a case of `shape` voxels and `channels`: float32 x copies x resampling zoom."""
    return int(math.prod(int(s) for s in shape) * max(1, channels) * 4 * copies * max(1.0, zoom))


def available_memory(meminfo: str | os.PathLike | None = None) -> int | None:
    """Bytes of memory available to new work: MemAvailable of /proc/meminfo, else free pages (os.sysconf)."""
    try:
        with open(meminfo or MEMINFO) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def usable_cores(cpu_max: str | os.PathLike = "/sys/fs/cgroup/cpu.max") -> int:
    """CPU cores this process may use: its CPU affinity, lowered by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def describe(shape: Sequence[int], channels: int = 1) -> str:
    """'512x512x1000 image (1 channel)' (shape given (z, y, x), written x-first like image viewers)."""
    dims = "x".join(str(int(s)) for s in reversed(tuple(shape)))
    return f"{dims} image ({channels} channel{'s' if channels != 1 else ''})"


def choose_workers(
    requested: int, bytes_per_worker: float, what: str = "", available: float | None = None, stage: str = "workers"
) -> int:
    """Workers that fit MARGIN x `available` memory (read now when None): between 1 and `requested`.

    `what` describes the largest case for the log message ("512x512x1000 image (1 channel)").
    """
    requested = max(1, int(requested))
    if available is None:
        available = available_memory()
    if not available or bytes_per_worker <= 0:
        return requested
    fits = int(max(1, min(requested, (MARGIN * available) // bytes_per_worker)))
    if fits < requested:
        logger.warning(
            f"{stage}: {what or 'the largest case'} needs ~{bytes_per_worker / GB:.1f} GB per worker; using {fits} "
            f"worker{'s' if fits != 1 else ''} instead of {requested} ({available / GB:.1f} GB available)"
        )
    if bytes_per_worker > MARGIN * available:
        logger.warning(
            f"{stage}: {what or 'the largest case'} needs ~{bytes_per_worker / GB:.1f} GB but only "
            f"{available / GB:.1f} GB are available; the run may be killed for lack of memory"
        )
    return fits
