"""A raw dataset with regions and an ignore label passes verify, fingerprint, planning and preprocessing."""

import json

import numpy as np
import pytest

from autoseg.data.dataset import load_dataset
from autoseg.data.image_io import read_image, read_label, write_label
from autoseg.data.synthetic import make_synthetic_dataset
from autoseg.data.verify import verify_dataset
from autoseg.fingerprint.extract import extract_fingerprint
from autoseg.planning.plans import Plans
from autoseg.preprocessing.pipeline import plan_and_preprocess
from autoseg.preprocessing.storage import list_cases, load_case
from autoseg.workspace import Workspace

LABELS = {"background": 0, "whole": [1, 2], "inner": [2], "ignore": 3}


def _dataset(raw, labels=LABELS, order=(1, 2), ignore_slices=True):
    folder = make_synthetic_dataset(raw, 997, "Regions", n_cases=4, shape=(8, 20, 20), spacing=(1.0, 1.0, 1.0))
    meta = json.loads((folder / "dataset.json").read_text())
    meta["labels"] = labels
    if order is not None:
        meta["regions_class_order"] = list(order)
    (folder / "dataset.json").write_text(json.dumps(meta))
    if ignore_slices:
        for p in sorted((folder / "labelsTr").iterdir()):
            lab, geo = read_label(p)
            lab[::2] = 3  # every second slice unannotated
            write_label(p, lab, geo)
    return folder


def test_verify_and_fingerprint_accept_regions_and_ignore(tmp_path):
    folder = _dataset(tmp_path / "raw")
    report = verify_dataset(folder, jobs=1)
    assert report.ok, report.problems
    assert report.label_values == (0, 1, 2, 3) and report.summary().endswith("labels 0-3: OK")
    spec = load_dataset(folder)
    assert spec.regions_class_order == (1, 2) and spec.scheme.regions == ((1, 2), (2,))
    assert spec.foreground_labels == (1, 2) and spec.label_values == (0, 1, 2, 3)
    fp, rows = extract_fingerprint(spec, jobs=1, sample_budget=4000)
    assert fp.labels == LABELS and fp.regions_class_order == (1, 2)
    assert fp.scheme.num_outputs == 2 and fp.scheme.ignore_label == 3
    assert set(fp.cases[0].label_voxels) == {"1", "2", "3"}  # the ignore label's voxels are counted too
    again = type(fp).load(fp.save(tmp_path / "fp.json"))  # regions survive the JSON round trip
    assert again.labels == LABELS and again.regions_class_order == (1, 2)


def test_foreground_intensities_leave_out_the_ignore_label(tmp_path):
    folder = _dataset(tmp_path / "raw", labels={"background": 0, "a": 1, "b": 2, "ignore": 3}, order=None)
    spec = load_dataset(folder)
    fp, _ = extract_fingerprint(spec, jobs=1, sample_budget=10**6)
    # the synthetic organs are 160 / -60 HU (labels 1 / 2); body background ~0-40; an ignored slice holds all three
    img_vals = []

    for case in sorted((folder / "labelsTr").iterdir()):
        image, _ = read_image([folder / "imagesTr" / case.name.replace(".nii.gz", "_0000.nii.gz")])
        lab, _ = read_label(case)
        img_vals.append(image[0][(lab > 0) & (lab != 3)])
    annotated = np.concatenate(img_vals)
    assert fp.intensity[0].min == pytest.approx(float(annotated.min()))
    assert fp.intensity[0].max == pytest.approx(float(annotated.max()))


def test_dataset_problems_for_regions_are_reported_by_verify(tmp_path):
    folder = _dataset(tmp_path / "raw", order=None)
    report = verify_dataset(folder, jobs=1)
    assert not report.ok
    assert any('"regions_class_order" is missing' in p and str(folder / "dataset.json") in p for p in report.problems)


def test_plan_and_preprocess_size_the_output_and_keep_ignore_locations_apart(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    _dataset(ws.raw)
    report = plan_and_preprocess(ws, "997", ["3d_fullres"], jobs=1)
    conf = Plans.load(report.plans_file).configuration("3d_fullres")
    folder = ws.preprocessed_config("Dataset997_Regions", conf.data_identifier)
    ids = list_cases(folder)
    assert report.configurations == ("3d_fullres",) and len(ids) == 4
    case = load_case(folder, ids[0])
    assert set(np.unique(case.seg).tolist()) <= {-1, 0, 1, 2, 3}
    assert 3 in case.class_locations  # stored, and left out by the sampler's classes (tests/unit/training)
