"""Foreground intensity samples held as (value, count) pairs, and their pooled statistics.

nnU-Net draws ``1e8 // n_cases`` foreground intensities per case with replacement and pools them into one array
(1e8 float32 values = 400 MB per channel, twice that while concatenating). autoseg draws the same kind of sample
(uniformly with replacement among the case's foreground voxels, the same number per case) but never materialises
it: a sample is stored as the sorted distinct values it contains and how often each was drawn. The pooled
statistics of that representation equal those of the expanded array exactly (mean, std with ddof 0, min, max and
``np.percentile``'s linear interpolation), and memory grows with the number of *distinct* values, not with the
number of draws.

To bound memory for float-valued images with many distinct values, values are rounded to 16 significant mantissa
bits before counting (relative error <= 2**-17 ~ 7.6e-6, far below the sampling noise of any statistic here).
Integers up to 131072 in magnitude (CT in HU, uint16 MRI) are unchanged, so for such data the statistics are exact.
The exact smallest and largest drawn values are kept beside the rounded ones, so min and max stay exact. There are
at most 2**16 distinct values per power of two, so a channel's pool stays at a few million (value, count) pairs
(tens of MB) whatever the dataset size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoseg.fingerprint.fingerprint import IntensityStats

DRAW_CHUNK = 1 << 22  # indices drawn per step, bounds the temporary index array to 32 MB
_DROPPED_BITS = 7  # float32 has 23 mantissa bits; keep 16
_PERCENTILES = (0.5, 50.0, 99.5)


@dataclass(frozen=True)
class WeightedSample:
    """A sample with repetitions: sorted distinct `values` (float32) and how often each was drawn (`counts`).

    `lo` and `hi` are the exact smallest and largest drawn values (before the mantissa rounding).
    """

    values: np.ndarray
    counts: np.ndarray
    lo: float = 0.0
    hi: float = 0.0

    @property
    def size(self) -> int:
        """Number of draws represented (length of the expanded sample)."""
        return int(self.counts.sum())

    def expand(self) -> np.ndarray:
        """The sample as a plain sorted array (tests and small data only)."""
        return np.repeat(self.values, self.counts)


EMPTY = WeightedSample(np.zeros(0, np.float32), np.zeros(0, np.int64))


def round_mantissa(values: np.ndarray) -> np.ndarray:
    """Round float32 values to 16 significant mantissa bits (round half away from zero)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    half = np.uint32(1 << (_DROPPED_BITS - 1))
    mask = np.uint32(~((1 << _DROPPED_BITS) - 1) & 0xFFFFFFFF)
    return ((bits + half) & mask).view(np.float32)


def compress(
    values: np.ndarray, counts: np.ndarray, lo: float | None = None, hi: float | None = None
) -> WeightedSample:
    """Merge equal values: (values, counts) in any order -> WeightedSample without zero counts.

    `lo`/`hi` default to the smallest/largest value with a nonzero count.
    """
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    if values.size == 0:
        return EMPTY
    uniq, inverse = np.unique(values, return_inverse=True)
    merged = np.bincount(inverse.ravel(), weights=counts, minlength=uniq.size).astype(np.int64)
    lo = float(uniq[0]) if lo is None else lo
    hi = float(uniq[-1]) if hi is None else hi
    return WeightedSample(uniq.astype(np.float32, copy=False), merged, lo, hi)


def draw(values: np.ndarray, n_samples: int, rng: np.random.Generator) -> WeightedSample:
    """Draw `n_samples` of `values` uniformly with replacement, returned as a WeightedSample.

    Args:
        values: the foreground intensities of one case and channel (any shape; flattened).
        n_samples: number of draws (nnU-Net: 1e8 // number of cases).
        rng: the case's generator; the draw depends only on it and on `values`.
    """
    values = np.ravel(values).astype(np.float32, copy=False)
    if values.size == 0 or n_samples <= 0:
        return EMPTY
    hits = np.zeros(values.size, np.int64)
    for start in range(0, n_samples, DRAW_CHUNK):
        idx = rng.integers(0, values.size, size=min(DRAW_CHUNK, n_samples - start))
        hits += np.bincount(idx, minlength=values.size)
    drawn = values[hits > 0]
    return compress(round_mantissa(values), hits, float(drawn.min()), float(drawn.max()))


def merge(samples: list[WeightedSample]) -> WeightedSample:
    """Pool several weighted samples into one."""
    parts = [s for s in samples if s.values.size]
    if not parts:
        return EMPTY
    if len(parts) == 1:
        return parts[0]
    return compress(
        np.concatenate([s.values for s in parts]),
        np.concatenate([s.counts for s in parts]),
        min(s.lo for s in parts),
        max(s.hi for s in parts),
    )


def _value_at(sample: WeightedSample, cum: np.ndarray, index: int) -> float:
    """Value at position `index` of the expanded sorted sample."""
    return float(sample.values[np.searchsorted(cum, index, side="right")])


def percentile(sample: WeightedSample, q: float) -> float:
    """Same as ``np.percentile(sample.expand(), q)`` (linear interpolation), without expanding."""
    cum = np.cumsum(sample.counts)
    pos = (int(cum[-1]) - 1) * q / 100.0
    lo = int(np.floor(pos))
    lo_val = _value_at(sample, cum, lo)
    frac = pos - lo
    if frac == 0.0:
        return lo_val
    return lo_val + frac * (_value_at(sample, cum, lo + 1) - lo_val)


def stats(sample: WeightedSample) -> IntensityStats:
    """mean, median, std (ddof 0), min, max, 0.5 and 99.5 percentiles of the expanded sample (float64 arithmetic)."""
    if sample.values.size == 0:
        raise ValueError("no foreground intensity samples")
    v = sample.values.astype(np.float64)
    w = sample.counts.astype(np.float64)
    n = w.sum()
    mean = float(np.dot(v, w) / n)
    std = float(np.sqrt(np.dot((v - mean) ** 2, w) / n))
    p_lo, p_med, p_hi = (percentile(sample, q) for q in _PERCENTILES)
    # the extreme percentiles can only differ from lo/hi by the rounding; keep them inside [lo, hi]
    p_lo, p_hi = max(p_lo, sample.lo), min(p_hi, sample.hi)
    return IntensityStats(
        mean=mean,
        median=p_med,
        std=std,
        min=sample.lo,
        max=sample.hi,
        percentile_00_5=p_lo,
        percentile_99_5=p_hi,
    )
