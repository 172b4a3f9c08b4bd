"""Shared fixtures: tiny synthetic datasets in a temporary workspace (never write into ../shared)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from autoseg.data.synthetic import make_synthetic_dataset
from autoseg.workspace import Workspace

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("AUTOSEG_NO_PROGRESS", "1")


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace.at(tmp_path / "ws")
    ws.raw.mkdir(parents=True)
    return ws


@pytest.fixture
def synthetic(workspace: Workspace):
    """Factory: synthetic(**kwargs) -> dataset folder under the workspace's raw/ (see make_synthetic_dataset)."""

    def make(**kwargs) -> Path:
        return make_synthetic_dataset(workspace.raw, **kwargs)

    return make


@pytest.fixture
def hippocampus_subset(workspace: Workspace):
    """Factory: copy the first n real Hippocampus cases into the workspace (dataset.json numTraining adjusted)."""

    def make(n: int = 10, dataset: str = "Dataset004_Hippocampus") -> Path:
        import json

        src = SHARED_DATA / dataset
        if not src.is_dir():
            pytest.fail(f"real data missing: {src}")
        dst = workspace.raw / dataset
        meta = json.loads((src / "dataset.json").read_text())
        cases = sorted(p.name for p in (src / "labelsTr").iterdir())[:n]
        (dst / "imagesTr").mkdir(parents=True)
        (dst / "labelsTr").mkdir(parents=True)
        ending = meta["file_ending"]
        for name in cases:
            cid = name[: -len(ending)]
            shutil.copy(src / "labelsTr" / name, dst / "labelsTr" / name)
            shutil.copy(src / "imagesTr" / f"{cid}_0000{ending}", dst / "imagesTr" / f"{cid}_0000{ending}")
        meta["numTraining"] = len(cases)
        (dst / "dataset.json").write_text(json.dumps(meta, indent=2))
        return dst

    return make


@pytest.fixture(autouse=True)
def _autoseg_logger_state():
    """Every test ends with the autoseg logger's handlers, level and propagation as they were at its start, so an
    in-process CLI call (which attaches a console handler and stops propagation) cannot change a later test."""
    import logging

    log = logging.getLogger("autoseg")
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    yield
    log.handlers[:], log.level, log.propagate = handlers, level, propagate


@pytest.fixture
def autoseg_log(caplog):
    """caplog that sees autoseg's log records at INFO and up: its handler sits on the autoseg logger itself (which
    does not propagate while the test runs), so neither a console handler set up earlier nor one set up by the code
    under test (which stops propagation) can hide a record from it."""
    import logging

    log = logging.getLogger("autoseg")
    log.addHandler(caplog.handler)
    log.propagate = False
    caplog.set_level(logging.INFO, logger="autoseg")
    yield caplog
    log.removeHandler(caplog.handler)
