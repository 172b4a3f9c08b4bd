from __future__ import annotations

import os

import numpy as np
import pytest

from autoseg.cli.main import main
from autoseg.errors import WorkspaceError
from autoseg.preprocessing import storage
from autoseg.preprocessing.folders import FolderLock, choose_jobs
from autoseg.preprocessing.preprocess import preprocess_dataset

NAME = "Dataset999_Synthetic"


@pytest.fixture
def dataset(synthetic, workspace, make_plans):
    synthetic(n_cases=4, shape=(10, 16, 16), spacing=(2.5, 0.8, 0.8), ct=False, oblique_every=2)
    plans = make_plans(spacing=(2.0, 1.0, 1.0), two_d_spacing=(1.0, 1.0), cascade=True)
    return workspace, plans


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def test_preprocess_dataset_writes_all_folders_and_gt(dataset):
    ws, plans = dataset
    rep = preprocess_dataset(ws, NAME, plans, jobs=1)
    assert rep.processed == 4 and rep.skipped == 0 and rep.skipped_configurations == ("3d_cascade_fullres",)
    for ident in ("2d", "3d_fullres"):
        folder = ws.preprocessed_config(NAME, ident)
        assert storage.list_cases(folder) == [f"case_{i:03d}" for i in range(4)]
        case = storage.load_case(folder, "case_001")
        assert case.data.dtype == np.float32 and case.seg.dtype == np.int8
        assert case.data.shape[1:] == case.properties.shape_after_resample == case.seg.shape[1:]
        assert case.class_locations and set(case.class_locations) <= {1, 2}
        assert not list(folder.glob(".*.tmp"))
    p2d = storage.load_properties(ws.preprocessed_config(NAME, "2d"), "case_000")
    p3d = storage.load_properties(ws.preprocessed_config(NAME, "3d_fullres"), "case_000")
    assert p2d.target_spacing[0] == p2d.spacing[0] and p2d.target_spacing[1:] == (1.0, 1.0)
    assert p3d.target_spacing == (2.0, 1.0, 1.0)
    raw_labels = ws.raw_dataset(NAME) / "labelsTr"
    for p in raw_labels.iterdir():
        assert (ws.gt_folder(NAME) / p.name).read_bytes() == p.read_bytes()


def test_rerun_skips_done_cases_overwrite_recomputes_and_settings_change_invalidates(dataset, make_plans):
    ws, plans = dataset
    preprocess_dataset(ws, NAME, plans, ["3d_fullres"], jobs=1)
    folder = ws.preprocessed_config(NAME, "3d_fullres")
    before = _files(folder)
    (folder / "case_002.json").unlink()  # as if killed before the last file of this case
    (folder / ".case_003.npy.abc12_xy.tmp").write_bytes(b"partial")  # a killed write (mkstemp: 8 random chars)
    rep = preprocess_dataset(ws, NAME, plans, ["3d_fullres"], jobs=2)
    assert rep.processed == 1 and rep.skipped == 3
    assert _files(folder) == before  # identical bytes, leftovers removed
    mtime = (folder / "case_000.npy").stat().st_mtime_ns
    assert preprocess_dataset(ws, NAME, plans, ["3d_fullres"], jobs=1).processed == 0
    assert (folder / "case_000.npy").stat().st_mtime_ns == mtime
    assert preprocess_dataset(ws, NAME, plans, ["3d_fullres"], jobs=1, overwrite=True).processed == 4
    other = make_plans(spacing=(2.5, 1.6, 1.6))
    assert preprocess_dataset(ws, NAME, other, ["3d_fullres"], jobs=1).processed == 4
    assert storage.load_properties(folder, "case_000").target_spacing == (2.5, 1.6, 1.6)


def test_second_process_on_the_same_folder_is_refused(dataset):
    ws, plans = dataset
    folder = ws.preprocessed_config(NAME, "3d_fullres")
    with FolderLock(folder):
        with pytest.raises(WorkspaceError, match=rf"another process \(pid {os.getpid()}\) is preprocessing"):
            preprocess_dataset(ws, NAME, plans, ["3d_fullres"], jobs=1)
    assert preprocess_dataset(ws, NAME, plans, ["3d_fullres"], jobs=1).processed == 4


def test_choose_jobs_bounds_memory():
    assert choose_jobs(4, 1e9, available=10e9) == 4
    assert choose_jobs(4, 3e9, available=10e9) == 2
    assert choose_jobs(4, 50e9, available=10e9) == 1
    assert choose_jobs(2, 0, available=None) == 2


def test_cli_preprocess(dataset, capsys):
    ws, plans = dataset
    plans.save(ws.plans_file(NAME))
    assert main(["preprocess", "--workspace", str(ws.root), "-d", "999", "-c", "2d", "-j", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 case(s) preprocessed, 0 already done" in out
    assert (
        storage.list_cases(ws.preprocessed_config(NAME, "2d"))
        and not ws.preprocessed_config(NAME, "3d_fullres").exists()
    )
    assert main(["preprocess", "--workspace", str(ws.root), "-d", "999", "-c", "3d_lowres"]) == 1
    assert "have no configuration '3d_lowres'" in capsys.readouterr().err
    assert main(["preprocess", "--workspace", str(ws.root), "-d", "999", "--plans", "nope"]) == 1
    assert "plans_nope.json: file not found" in capsys.readouterr().err


def test_cli_plan_and_preprocess(synthetic, workspace, capsys):
    synthetic(n_cases=3, shape=(8, 12, 12), spacing=(1.0, 1.0, 1.0), ct=True, oblique_every=0)
    rc = main(["plan_and_preprocess", "--workspace", str(workspace.root), "-d", "999", "-j", "1"])
    assert rc == 0, capsys.readouterr().err
    from autoseg.planning.plans import Plans

    plans = Plans.load(workspace.plans_file(NAME))
    assert plans.intensity is not None and plans.configuration("3d_fullres").normalization == ("ct",)
    for cfg in plans.configurations:
        assert len(storage.list_cases(workspace.preprocessed_config(NAME, cfg.data_identifier))) == 3
    assert workspace.fingerprint_file(NAME).is_file()
