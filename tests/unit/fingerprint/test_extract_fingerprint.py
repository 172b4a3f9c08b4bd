"""Fingerprint extraction on hand-built cases with known geometry, determinism, the per-case table."""

import json
import math

import numpy as np
import pytest

from autoseg.data.dataset import load_dataset
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_image, write_label
from autoseg.errors import DatasetError, FingerprintError
from autoseg.fingerprint.extract import extract_fingerprint, fingerprint_dataset
from autoseg.fingerprint.fingerprint import DatasetFingerprint


def _write_dataset(folder, cases):
    """cases: {case_id: (image (Z,Y,X), label (Z,Y,X), spacing (z,y,x))} -> one-channel NIfTI dataset."""
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for cid, (image, label, spacing) in cases.items():
        geo = Geometry(spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
        write_image(folder / "imagesTr" / f"{cid}_0000.nii.gz", image.astype(np.float32), geo)
        write_label(folder / "labelsTr" / f"{cid}.nii.gz", label, geo)
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def known(workspace):
    """Case A: body box z 1..4, y 2..7, x 3..9 (value 100, one enclosed hole) in a (6, 10, 12) image at
    (2.0, 0.5, 0.25) mm; label 1 = 8 voxels of intensity 10, label 2 = 2 voxels of 20 inside the box plus
    1 voxel outside it (image 0 there). Case B: (4, 4, 4) all 5, one label-1 voxel of 30, 1 mm."""
    img_a = np.zeros((6, 10, 12))
    img_a[1:5, 2:8, 3:10] = 100.0
    img_a[3, 3, 8] = 0.0  # enclosed hole
    lab_a = np.zeros((6, 10, 12), np.uint8)
    lab_a[2, 3:5, 4:8] = 1
    lab_a[3, 5, 5:7] = 2
    lab_a[0, 0, 0] = 2
    img_a[lab_a == 1] = 10.0
    img_a[3, 5, 5:7] = 20.0
    img_b = np.full((4, 4, 4), 5.0)
    lab_b = np.zeros((4, 4, 4), np.uint8)
    lab_b[1, 2, 3] = 1
    img_b[1, 2, 3] = 30.0
    cases = {"a": (img_a, lab_a, (2.0, 0.5, 0.25)), "b": (img_b, lab_b, (1.0, 1.0, 1.0))}
    return _write_dataset(workspace.raw / "Dataset010_Known", cases)


def test_crop_shapes_label_volumes_and_intensities_by_hand(known):
    fp, rows = extract_fingerprint(load_dataset(known), jobs=1, sample_budget=200_000)
    a, b = fp.cases
    assert (a.case_id, b.case_id) == ("a", "b")
    assert a.spacing == (2.0, 0.5, 0.25)
    assert a.shape_before_crop == (6, 10, 12) and a.shape_after_crop == (4, 6, 7)
    assert b.shape_before_crop == b.shape_after_crop == (4, 4, 4)
    assert a.label_voxels == {"1": 8, "2": 3}  # counted on the whole label map, outside the crop too
    assert a.label_volumes_ml == pytest.approx({"1": 8 * 0.25e-3, "2": 3 * 0.25e-3})
    assert b.label_voxels == {"1": 1, "2": 0} and b.label_volumes_ml == {"1": 0.001, "2": 0.0}
    assert fp.median_relative_size_after_cropping == pytest.approx((4 * 6 * 7 / (6 * 10 * 12) + 1.0) / 2)
    assert fp.num_training == 2 and fp.intensity_samples_per_case == 100_000 and fp.seed == 1234
    st = fp.intensity[0]
    # the label-2 voxel outside the crop (intensity 0) is not sampled; each case gets half of the draws
    assert (st.min, st.max, st.percentile_00_5, st.percentile_99_5) == (10.0, 30.0, 10.0, 30.0)
    assert st.mean == pytest.approx((12.0 + 30.0) / 2, abs=0.05)  # case A fg mean 12, case B 30
    assert rows[0]["shape_after_y"] == 6 and rows[0]["voxels_b"] == 3
    assert rows[0]["relative_size"] == pytest.approx(168 / 720) and rows[0]["ml_a"] == pytest.approx(0.002)


def test_byte_identical_outputs_across_runs_and_jobs(synthetic, workspace):
    name = synthetic(n_cases=4, shape=(10, 16, 16)).name
    outputs = []
    for jobs in (1, 2, 1):
        fp, json_path, csv_path = fingerprint_dataset(workspace, name, jobs=jobs, sample_budget=400_000)
        outputs.append((json_path.read_bytes(), csv_path.read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]
    assert json_path == workspace.fingerprint_file(name) and csv_path == workspace.fingerprint_table(name)
    loaded = DatasetFingerprint.load(json_path)
    assert loaded == fp and loaded.schema_version == 1 and len(loaded.cases) == 4
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[:4] == ["case", "spacing_z", "spacing_y", "spacing_x"]
    assert {"voxels_organ1", "ml_organ1", "voxels_organ2", "ml_organ2", "relative_size"} <= set(header)


def test_seed_changes_the_sample(synthetic, workspace):
    spec = load_dataset(synthetic(n_cases=2, shape=(8, 12, 12)))
    a, _ = extract_fingerprint(spec, jobs=1, seed=1, sample_budget=10_000)
    b, _ = extract_fingerprint(spec, jobs=1, seed=2, sample_budget=10_000)
    assert a.cases == b.cases and a.intensity != b.intensity


def test_2d_dataset_has_pseudo_spacing_and_no_volumes(workspace):
    folder = workspace.raw / "Dataset011_Flat"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    image = np.zeros((1, 8, 10), np.uint16)
    image[0, 2:6, 1:9] = 400
    label = np.zeros((1, 8, 10), np.uint8)
    label[0, 3:5, 2:5] = 1
    geo = Geometry.identity((1.0, 1.0), dim=2)
    write_image(folder / "imagesTr" / "c_0000.png", image, geo)
    write_label(folder / "labelsTr" / "c.png", label, geo)
    meta = {"channel_names": {"0": "X"}, "labels": {"background": 0, "fg": 1}, "numTraining": 1, "file_ending": ".png"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    fp, rows = extract_fingerprint(load_dataset(folder), jobs=1, sample_budget=1000)
    case = fp.cases[0]
    assert fp.is_2d and case.spacing == (999.0, 1.0, 1.0)
    assert case.shape_before_crop == (1, 8, 10) and case.shape_after_crop == (1, 4, 8)
    assert case.label_voxels == {"1": 6} and case.label_volumes_ml is None
    assert fp.intensity[0].mean == 400.0 and fp.intensity[0].std == 0.0
    assert not any(k.startswith("ml_") for k in rows[0])


def test_dataset_problems_and_empty_foreground_are_reported(known):
    (known / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"b\.nii\.gz: label file is missing"):
        extract_fingerprint(load_dataset(known), jobs=1)
    (known / "imagesTr" / "b_0000.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"numTraining is 2 but 1 cases were found in .*imagesTr; fix numTraining"):
        extract_fingerprint(load_dataset(known), jobs=1)
    meta = json.loads((known / "dataset.json").read_text())
    (known / "dataset.json").write_text(json.dumps({**meta, "numTraining": 1}))
    lab = known / "labelsTr" / "a.nii.gz"
    write_label(
        lab, np.zeros((6, 10, 12), np.uint8), Geometry((2.0, 0.5, 0.25), (0.0,) * 3, (1.0, 0, 0, 0, 1, 0, 0, 0, 1))
    )
    with pytest.raises(FingerprintError, match="no case has foreground"):
        extract_fingerprint(load_dataset(known), jobs=1)


def test_relative_size_is_product_ratio(known):
    fp, _ = extract_fingerprint(load_dataset(known), jobs=1, sample_budget=1000)
    c = fp.cases[0]
    assert math.prod(c.shape_after_crop) / math.prod(c.shape_before_crop) == pytest.approx(0.2333333, rel=1e-6)
