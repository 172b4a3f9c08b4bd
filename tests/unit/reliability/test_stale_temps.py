"""Stale temporary files of killed writers: `remove_stale_temps` deletes exactly autoseg's own temporary names, and a
preprocessing re-run removes them from its folders, only while no other run may be writing them."""

from __future__ import annotations

import os

import numpy as np
import pytest

from autoseg.cli.main import main
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_image
from autoseg.preprocessing.folders import SharedFolderLock
from autoseg.serialization import atomic_write, atomic_write_text, is_temp_name, new_temp_file, remove_stale_temps
from autoseg.training.checkpoint import save_checkpoint

NAME = "Dataset999_Synthetic"
OURS = (".case_000.npy.k2j_x9a0.tmp", ".case_001.nii.gz.abcdefgh.tmp.nii.gz", ".plans.json.00000000.tmp")
OTHERS = (
    "case_000.npy",
    ".lock",
    ".settings.json",
    ".gt_segmentations.lock",
    "notes.tmp",  # not hidden
    ".notes.tmp",  # no random part
    ".case.npy.ABCDEFGH.tmp",  # mkstemp never uses capitals
    ".case.npy.abc.tmp",  # too short
    ".case.npy.abcdefgh.tmp~",
    ".case.npy.abcdefgh.tmpx",
    "x.case.npy.abcdefgh.tmp",
)


def test_every_writer_uses_the_temp_name(tmp_path, monkeypatch):
    """The names the atomic writers really use (recorded at the rename) are recognised, so none can be missed."""
    seen: list[str] = []
    real = os.replace

    def record(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", record)
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
    atomic_write_text(tmp_path / "plans.json", "{}")
    atomic_write(tmp_path / "case_000.npy", lambda fh: np.save(fh, np.zeros(3)))
    for name in ("a.nii.gz", "b.mha", "c.nrrd"):
        write_image(tmp_path / name, np.zeros((2, 3, 4), np.uint8), geo)
    save_checkpoint(tmp_path / "checkpoint_latest.pt", {"model": {}})
    assert len(seen) == 6
    assert all(is_temp_name(n) for n in seen), seen
    fd, made = new_temp_file(tmp_path / "d.nii.gz", suffix=".tmp.nii.gz")
    os.close(fd)
    assert is_temp_name(os.path.basename(made))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".") and n != os.path.basename(made)]


def test_removes_only_our_temp_files(tmp_path):
    for name in OURS + OTHERS:
        (tmp_path / name).write_text("x")
    fd, made = new_temp_file(tmp_path / "case_002.npy")
    os.close(fd)
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()  # a folder with our name is not ours
    os.symlink(tmp_path / "case_000.npy", tmp_path / ".link.abcdefgh.tmp")  # nor is a link
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / OURS[0]).write_text("x")  # subfolders are not searched
    assert not any(is_temp_name(n) for n in OTHERS)
    assert remove_stale_temps(tmp_path) == 4
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*OTHERS, ".dir.abcdefgh.tmp", ".link.abcdefgh.tmp", "sub"])
    assert (tmp_path / "sub" / OURS[0]).is_file() and (tmp_path / "case_000.npy").read_text() == "x"
    assert remove_stale_temps(tmp_path) == 0
    assert remove_stale_temps(tmp_path / "missing") == 0


@pytest.fixture
def preprocessed(workspace, synthetic, capsys):
    synthetic(n_cases=3, shape=(8, 10, 12), ct=False)
    argv = ["--workspace", str(workspace.root), "-d", "999", "-j", "1"]
    assert main(["plan_and_preprocess", *argv, "-c", "3d_fullres"]) == 0
    capsys.readouterr()
    folder = next(p for p in workspace.preprocessed_dataset(NAME).iterdir() if p.name.endswith("3d_fullres"))
    return workspace, folder, argv


def plant(folder, names) -> dict[str, bytes]:
    for name in names:
        (folder / name).write_bytes(b"half-written")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock" and not is_temp_name(p.name)}


def test_preprocess_rerun_removes_stale_temps(preprocessed, capsys):
    ws, folder, argv = preprocessed
    gt = ws.gt_folder(NAME)
    kept = plant(folder, [".case_000.npy.k2j_x9a0.tmp", ".case_001_seg.npy.abcdefgh.tmp", "notes.tmp"])
    kept_gt = plant(gt, [".case_002.nii.gz.x1y2z3w4.tmp"])
    assert main(["preprocess", *argv, "-c", "3d_fullres"]) == 0
    err = capsys.readouterr().err
    assert f"{folder}: removed 2 stale temporary files left by an interrupted run" in err
    assert f"{gt}: removed 1 stale temporary file left by an interrupted run" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"} == kept
    assert {p.name: p.read_bytes() for p in gt.iterdir()} == kept_gt
    assert (folder / "notes.tmp").is_file()


def test_shared_gt_folder_is_cleaned_only_without_another_run(preprocessed, capsys):
    ws, folder, argv = preprocessed
    gt = ws.gt_folder(NAME)
    temp = gt / ".case_000.nii.gz.abcdefgh.tmp.nii.gz"
    with SharedFolderLock(gt):  # another configuration's run is copying labels right now
        temp.write_bytes(b"in flight")
        assert main(["preprocess", *argv, "-c", "3d_fullres"]) == 0
        assert temp.is_file(), "another run's temporary file was deleted"
        with SharedFolderLock(gt):  # a second sharer waits for no one and cleans nothing either
            assert temp.is_file()
    with SharedFolderLock(gt):  # alone now: the stale file goes
        assert not temp.exists()
    assert capsys.readouterr().err.count(f"{gt}: removed 1 stale temporary file") == 1  # by the last one only
    assert not (gt / ".lock").exists() and (gt.parent / ".gt_segmentations.lock").is_file()


def test_failed_first_run_leaves_no_gt_lock_behind(workspace, synthetic, capsys):
    folder = synthetic(n_cases=3, shape=(8, 10, 12), ct=False)
    argv = ["--workspace", str(workspace.root), "-d", "999"]
    assert main(["fingerprint", *argv, "-j", "1"]) == 0 and main(["plan", *argv]) == 0
    before = sorted(p.name for p in workspace.preprocessed_dataset(NAME).iterdir())
    (folder / "labelsTr" / "case_001.nii.gz").write_bytes(b"not an image" * 50)
    assert main(["preprocess", *argv, "-j", "1"]) == 1
    assert "case_001.nii.gz" in capsys.readouterr().err
    assert sorted(p.name for p in workspace.preprocessed_dataset(NAME).iterdir()) == before
