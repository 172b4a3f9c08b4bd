"""Memory-aware worker counts (autoseg.resources) with a monkeypatched /proc/meminfo."""

from __future__ import annotations

import pytest

from autoseg import resources
from autoseg.data.dataset import list_cases, load_dataset
from autoseg.data.workers import workers_for_cases
from autoseg.preprocessing.pipeline import plan_and_preprocess

GB = 1024**3


@pytest.fixture
def meminfo(tmp_path, monkeypatch):
    def set_available(n_bytes: int) -> None:
        path = tmp_path / "meminfo"
        path.write_text(f"MemTotal:       99999999 kB\nMemFree:  1 kB\nMemAvailable:   {n_bytes // 1024} kB\n")
        monkeypatch.setattr(resources, "MEMINFO", path)

    return set_available


def test_case_bytes_and_description():
    assert resources.case_bytes((1000, 512, 512), 1, copies=6) == 1000 * 512 * 512 * 4 * 6
    assert resources.case_bytes((10, 10, 10), 2, copies=3, zoom=2.0) == 1000 * 2 * 4 * 3 * 2
    assert resources.case_bytes((10, 10, 10), 1, copies=1, zoom=0.5) == 4000  # downsampling never shrinks the read
    assert resources.describe((1000, 512, 512), 1) == "512x512x1000 image (1 channel)"


def test_available_memory_reads_meminfo_and_falls_back(meminfo, tmp_path, monkeypatch):
    meminfo(3 * GB)
    assert resources.available_memory() == 3 * GB
    monkeypatch.setattr(resources, "MEMINFO", tmp_path / "missing")
    fallback = resources.available_memory()
    assert fallback is not None and fallback > 0


def test_large_ct_reduces_workers_and_says_so(meminfo, autoseg_log):
    need = resources.case_bytes((1000, 512, 512), 1)  # ~5.9 GB per worker
    meminfo(10 * GB)
    n = resources.choose_workers(2, need, resources.describe((1000, 512, 512)), stage="preprocess")
    assert n == 1
    text = autoseg_log.text
    assert "preprocess: 512x512x1000 image (1 channel) needs ~5.9 GB per worker; using 1 worker instead of 2" in text
    assert "(10.0 GB available)" in text
    autoseg_log.clear()
    meminfo(64 * GB)
    assert resources.choose_workers(4, need, "x") == 4 and autoseg_log.text == ""
    meminfo(4 * GB)
    assert resources.choose_workers(4, need, "big") == 1  # never 0: slower, and a warning that it may not fit
    assert "needs ~5.9 GB but only 4.0 GB are available" in autoseg_log.text


def test_preprocess_and_fingerprint_use_fewer_workers(workspace, synthetic, meminfo, autoseg_log, monkeypatch):
    folder = synthetic(n_cases=4, shape=(16, 24, 24))
    cases, _ = list_cases(load_dataset(folder))
    one_case = resources.case_bytes((17, 26, 26), 1, resources.COPIES["preprocess"])
    meminfo(int(one_case * 1.5 / resources.MARGIN))  # room for one worker, not two
    assert workers_for_cases(2, cases, "fingerprint") == 2  # 3 copies fit twice
    assert workers_for_cases(2, cases, "verify", available=1000) == 1
    report = plan_and_preprocess(workspace, "999", ["3d_fullres"], jobs=2)
    assert report.preprocess.jobs == 1
    assert "using 1 worker instead of 2" in autoseg_log.text
