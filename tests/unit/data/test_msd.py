"""`autoseg convert_msd` on small MSD task folders built here (4D multi-modal and 3D single-modal)."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from autoseg.cli.main import main
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, write_image, write_label
from autoseg.data.msd import read_msd_task
from autoseg.data.synthetic import oblique_direction
from autoseg.errors import DatasetError

SHARED_HIPPO = Path(__file__).resolve().parents[4] / "shared" / "data" / "Dataset004_Hippocampus"


def write_4d(path: Path, volumes: np.ndarray, geo: Geometry) -> None:
    """Write (T, Z, Y, X) as a 4D NIfTI: a 3D file of T*Z slices whose header is patched to dim = (X, Y, Z, T)."""
    tmp = path.with_name("tmp4d.nii")
    write_image(tmp, volumes.reshape(-1, *volumes.shape[2:]), geo, compress=False)
    raw = bytearray(tmp.read_bytes())
    tmp.unlink()
    dims = list(struct.unpack("<8h", raw[40:56]))
    dims[0], dims[3], dims[4] = 4, volumes.shape[1], volumes.shape[0]
    raw[40:56] = struct.pack("<8h", *dims)
    raw[92:96] = struct.pack("<f", 1.0)  # pixdim[4]: time step
    path.write_bytes(gzip.compress(bytes(raw)))


GEOS = {
    "brain_001": Geometry((3.0, 1.0, 1.2), (10.0, -5.0, 2.0), oblique_direction(0.3)),
    "brain_002": Geometry((2.5, 0.9, 0.9), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist())),
    "brain_005": Geometry((2.0, 1.0, 1.0), (1.0, 2.0, 3.0), tuple(np.eye(3).ravel().tolist())),
}


def make_msd_task(root: Path, name: str = "Task07_Toy", n_volumes: int = 2) -> tuple[Path, dict]:
    """Two 4D training cases and one 4D test case, plus macOS '._' files that must be ignored."""
    task = root / name
    rng = np.random.default_rng(0)
    data = {}
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
        (task / sub / "._brain_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    for cid, geo in GEOS.items():
        vols = rng.normal(100, 20, (n_volumes, 5, 6, 7)).astype(np.float32)
        test = cid == "brain_005"
        write_4d(task / ("imagesTs" if test else "imagesTr") / f"{cid}.nii.gz", vols, geo)
        lab = rng.integers(0, 3, (5, 6, 7)).astype(np.uint8)
        if not test:
            write_label(task / "labelsTr" / f"{cid}.nii.gz", lab, geo)
        data[cid] = (vols, lab)
    meta = {
        "name": "TOY",
        "description": "toy task",
        "licence": "CC-BY-SA 4.0",
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "2": "tumour", "1": "edema"},
        "numTraining": 2,
        "numTest": 1,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in GEOS][:2],
        "test": ["./imagesTs/brain_005.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(meta))
    return task, data


def test_convert_4d_task_splits_channels_and_keeps_geometry(workspace, tmp_path, capsys):
    task, data = make_msd_task(tmp_path / "msd")
    rc = main(["convert_msd", "-i", str(task), "-d", "107", "--workspace", str(workspace.root), "-j", "1"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    folder = workspace.raw / "Dataset107_Toy"
    assert f"wrote {folder}" in out.out
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "brain_001_0000.nii.gz",
        "brain_001_0001.nii.gz",
        "brain_002_0000.nii.gz",
        "brain_002_0001.nii.gz",
    ]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["brain_005_0000.nii.gz", "brain_005_0001.nii.gz"]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    assert list(meta["labels"].items()) == [("background", 0), ("edema", 1), ("tumour", 2)]
    assert (meta["numTraining"], meta["file_ending"], meta["name"]) == (2, ".nii.gz", "Toy")
    for cid, (vols, lab) in data.items():
        sub = "imagesTs" if cid == "brain_005" else "imagesTr"
        for c in range(2):
            arr, geo = read_file(folder / sub / f"{cid}_{c:04d}.nii.gz")
            np.testing.assert_array_equal(arr[0], vols[c])
            assert geo.matches(GEOS[cid], rtol=1e-6, atol=1e-5) == []
        if sub == "imagesTr":
            np.testing.assert_array_equal(read_file(folder / "labelsTr" / f"{cid}.nii.gz")[0][0], lab)
            assert (folder / "labelsTr" / f"{cid}.nii.gz").read_bytes() == (
                task / "labelsTr" / f"{cid}.nii.gz"
            ).read_bytes()
    assert [p.name for p in workspace.raw.iterdir()] == ["Dataset107_Toy"]  # no temporary folder left
    assert main(["verify", "-d", "107", "--workspace", str(workspace.root), "-j", "1"]) == 0
    assert capsys.readouterr().out == "Dataset107_Toy: 2 cases, 2 channels, labels 0-2: OK\n"


def test_convert_real_hippocampus_cases_default_id_parallel(workspace, tmp_path, capsys):
    task = tmp_path / "Task04_Hippocampus"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    ids = ["hippocampus_001", "hippocampus_003", "hippocampus_004"]
    for cid in ids:
        shutil.copy(SHARED_HIPPO / "imagesTr" / f"{cid}_0000.nii.gz", task / "imagesTr" / f"{cid}.nii.gz")
        shutil.copy(SHARED_HIPPO / "labelsTr" / f"{cid}.nii.gz", task / "labelsTr" / f"{cid}.nii.gz")
    meta = {
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
    }
    (task / "dataset.json").write_text(json.dumps(meta))
    assert main(["convert_msd", "-i", str(task), "--workspace", str(workspace.root), "-j", "2"]) == 0
    folder = workspace.raw / "Dataset004_Hippocampus"
    for cid in ids:
        got, g1 = read_file(folder / "imagesTr" / f"{cid}_0000.nii.gz")
        ref, g2 = read_file(SHARED_HIPPO / "imagesTr" / f"{cid}_0000.nii.gz")
        np.testing.assert_array_equal(got, ref)
        assert got.dtype == ref.dtype and g1.matches(g2, rtol=1e-6, atol=1e-6) == []
    capsys.readouterr()
    assert main(["verify", "-d", "4", "--workspace", str(workspace.root), "-j", "1"]) == 0
    assert capsys.readouterr().out == "Dataset004_Hippocampus: 3 cases, 1 channel, labels 0-2: OK\n"


def test_refuses_to_overwrite(workspace, tmp_path, capsys):
    task, _ = make_msd_task(tmp_path / "msd")
    args = ["convert_msd", "-i", str(task), "--workspace", str(workspace.root), "-j", "1"]
    assert main(args) == 0
    before = sorted(p.name for p in (workspace.raw / "Dataset007_Toy" / "imagesTr").iterdir())
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{workspace.raw / 'Dataset007_Toy'}: dataset id 007 is already used" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (workspace.raw / "Dataset007_Toy" / "imagesTr").iterdir()) == before
    assert [p.name for p in workspace.raw.iterdir()] == ["Dataset007_Toy"]


def test_failure_leaves_nothing_behind(workspace, tmp_path, capsys):
    task, _ = make_msd_task(tmp_path / "msd", n_volumes=3)  # 3 volumes per file but 2 modalities declared
    assert main(["convert_msd", "-i", str(task), "--workspace", str(workspace.root), "-j", "1"]) == 1
    err = capsys.readouterr().err
    assert "brain_001.nii.gz: holds 3 volume(s) but dataset.json's modality declares 2" in err
    assert "Traceback" not in err
    assert list(workspace.raw.iterdir()) == []


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.pop("modality"), '"modality" must be an object'),
        (lambda m: m.update(labels={"bg": 0}), '"labels" must map label values to names'),
        (lambda m: m["training"].append({"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}), "x.nii.gz"),
        (lambda m: m.update(training=[]), '"training" must be a non-empty list'),
    ],
)
def test_bad_msd_dataset_json(tmp_path, change, words):
    task, _ = make_msd_task(tmp_path / "msd")
    meta = json.loads((task / "dataset.json").read_text())
    change(meta)
    (task / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="dataset.json") as info:
        read_msd_task(task)
    assert words in str(info.value)


def test_folder_name_must_be_task(tmp_path):
    task, _ = make_msd_task(tmp_path / "msd", name="Task07_Toy")
    other = task.rename(task.with_name("Toy"))
    with pytest.raises(DatasetError, match=r"Toy: folder name must look like TaskNN_Name"):
        read_msd_task(other)


def test_every_bad_source_file_is_named_before_anything_is_written(workspace, tmp_path, capsys):
    """Broken files of several cases: one run names them all (file and problem), exits 1, writes nothing."""
    task, _ = make_msd_task(tmp_path / "msd")
    meta = json.loads((task / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/brain_003.nii.gz", "label": "./labelsTr/brain_003.nii.gz"})
    meta["training"].append({"image": "./imagesTr/brain_004.nii.gz", "label": "./labelsTr/missing.nii.gz"})
    (task / "dataset.json").write_text(json.dumps(meta))
    img_tr, lab_tr, img_ts = task / "imagesTr", task / "labelsTr", task / "imagesTs"
    shutil.copy(img_tr / "brain_001.nii.gz", img_tr / "brain_004.nii.gz")
    data = (img_tr / "brain_001.nii.gz").read_bytes()
    (img_tr / "brain_001.nii.gz").write_bytes(data[: len(data) // 2])  # truncated gzip stream
    write_label(lab_tr / "brain_002.nii.gz", np.zeros((5, 6, 8), np.uint8), GEOS["brain_002"])  # wrong shape
    (img_tr / "brain_003.nii.gz").write_bytes(b"")
    shutil.copy(lab_tr / "brain_002.nii.gz", lab_tr / "brain_003.nii.gz")
    write_4d(img_ts / "brain_005.nii.gz", np.zeros((3, 5, 6, 7), np.float32), GEOS["brain_005"])  # 3 volumes
    (img_ts / "notes.txt").write_text("not an image")
    rc = main(["convert_msd", "-i", str(task), "-d", "108", "--workspace", str(workspace.root), "-j", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "6 input problems:" in err
    expected = {
        img_tr / "brain_001.nii.gz": "truncated",
        lab_tr / "brain_002.nii.gz": "shape (5, 6, 8) differs from its image brain_002.nii.gz (5, 6, 7)",
        img_tr / "brain_003.nii.gz": "file is empty (0 bytes)",
        lab_tr / "missing.nii.gz": "listed in",
        img_ts / "brain_005.nii.gz": "holds 3 volume(s) but dataset.json's modality declares 2",
        img_ts / "notes.txt": "MSD images must be NIfTI files",
    }
    for path, words in expected.items():
        lines = [line for line in err.splitlines() if f"{path}:" in line]
        assert len(lines) == 1 and words in lines[0], (path, err)
    assert list(workspace.raw.iterdir()) == []  # no dataset, no temporary folder


def test_used_dataset_id_is_named_with_the_source_problems(workspace, tmp_path, capsys):
    task, _ = make_msd_task(tmp_path / "msd")
    (workspace.raw / "Dataset007_Other").mkdir()
    (task / "labelsTr" / "brain_001.nii.gz").write_bytes(b"")
    assert main(["convert_msd", "-i", str(task), "--workspace", str(workspace.root), "-j", "2"]) == 1
    err = capsys.readouterr().err
    assert "2 input problems:" in err and "Traceback" not in err
    assert f"{workspace.raw / 'Dataset007_Other'}: dataset id 007 is already used" in err
    assert f"{task / 'labelsTr' / 'brain_001.nii.gz'}: file is empty (0 bytes)" in err
    assert [p.name for p in workspace.raw.iterdir()] == ["Dataset007_Other"]
