"""Weighted (value, count) samples: exact equality with expanded-array statistics, rounding, drawing."""

import numpy as np
import pytest

from autoseg.fingerprint import intensity


def _weighted(values, counts):
    return intensity.compress(np.asarray(values, np.float32), np.asarray(counts, np.int64))


def test_stats_equal_numpy_on_the_expanded_sample():
    rng = np.random.default_rng(0)
    values = rng.integers(-1000, 3000, 500).astype(np.float32)
    counts = rng.integers(0, 40, 500)
    sample = _weighted(values, counts)
    flat = np.repeat(values, counts).astype(np.float64)
    st = intensity.stats(sample)
    assert sample.size == counts.sum()
    assert st.mean == pytest.approx(flat.mean(), rel=1e-12)
    assert st.std == pytest.approx(flat.std(), rel=1e-12)
    assert (st.min, st.max) == (flat.min(), flat.max())
    for q, got in ((0.5, st.percentile_00_5), (50, st.median), (99.5, st.percentile_99_5)):
        assert got == pytest.approx(np.percentile(flat, q), abs=1e-9)


@pytest.mark.parametrize("q", [0.0, 0.5, 12.3, 50.0, 99.5, 100.0])
def test_percentile_interpolates_like_numpy(q):
    sample = _weighted([1.0, 2.0, 10.0], [1, 2, 1])  # expanded: 1, 2, 2, 10
    assert intensity.percentile(sample, q) == pytest.approx(np.percentile([1.0, 2.0, 2.0, 10.0], q))


def test_round_mantissa_keeps_integers_and_bounds_relative_error():
    ints = np.arange(-131072, 131073, 7, dtype=np.float32)
    assert np.array_equal(intensity.round_mantissa(ints), ints)
    x = np.random.default_rng(1).lognormal(0, 8, 10000).astype(np.float32) * np.float32(-1) ** np.arange(10000)
    rel = np.abs(intensity.round_mantissa(x).astype(np.float64) / x - 1)
    assert rel.max() <= 2.0**-17
    assert len(np.unique(intensity.round_mantissa(np.linspace(1, 2, 10**6, dtype=np.float32)))) <= 2**16 + 1


def test_draw_counts_every_sample_and_keeps_exact_extremes():
    values = np.array([0.1, 5.0, 123456.789, 7.0], np.float32)
    sample = intensity.draw(values, 10_000, np.random.default_rng(3))
    assert sample.size == 10_000
    assert set(sample.values.tolist()) <= set(intensity.round_mantissa(values).tolist())
    assert sample.lo == float(np.float32(0.1)) and sample.hi == float(np.float32(123456.789))
    assert intensity.stats(sample).max == float(np.float32(123456.789))


def test_draw_is_deterministic_per_generator_and_empty_input_is_empty():
    values = np.arange(1000, dtype=np.float32)
    a = intensity.draw(values, 5000, np.random.default_rng([1234, 7]))
    b = intensity.draw(values, 5000, np.random.default_rng([1234, 7]))
    c = intensity.draw(values, 5000, np.random.default_rng([1234, 8]))
    assert np.array_equal(a.values, b.values) and np.array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts) or not np.array_equal(a.values, c.values)
    assert intensity.draw(np.zeros(0, np.float32), 100, np.random.default_rng(0)).size == 0
    with pytest.raises(ValueError, match="no foreground"):
        intensity.stats(intensity.EMPTY)


def test_uniform_distribution_statistics_within_sampling_noise():
    """Draws from 1..100 (uniform): mean 50.5, sd 28.87; with 1e6 draws the sd of the mean is ~0.03."""
    sample = intensity.draw(np.arange(1, 101, dtype=np.float32), 10**6, np.random.default_rng(5))
    st = intensity.stats(sample)
    assert st.mean == pytest.approx(50.5, abs=0.15)
    assert st.std == pytest.approx(np.sqrt((100**2 - 1) / 12), abs=0.15)
    assert st.median in (50.0, 50.5, 51.0)
    assert (st.min, st.max, st.percentile_00_5, st.percentile_99_5) == (1.0, 100.0, 1.0, 100.0)


def test_merge_pools_counts_and_extremes():
    a = _weighted([1.0, 2.0], [3, 1])
    b = _weighted([2.0, 9.0], [2, 4])
    m = intensity.merge([a, intensity.EMPTY, b])
    assert m.values.tolist() == [1.0, 2.0, 9.0] and m.counts.tolist() == [3, 3, 4]
    assert (m.lo, m.hi) == (1.0, 9.0)
