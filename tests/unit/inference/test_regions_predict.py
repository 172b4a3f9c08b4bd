"""Prediction and ensembling for a dataset with regions: sigmoid probabilities per region, labels through
regions_class_order, on the one road (`Predictor.preprocessed_output` + `exporter.export_case`)."""

import dataclasses

import numpy as np
from fake_model import make_fake_model, write_case

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_label, write_label
from autoseg.data.labels import label_scheme
from autoseg.data.probabilities import load_probabilities, save_probabilities
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.inference.ensemble import ensemble_folders
from autoseg.inference.predictor import run_predict
from autoseg.workspace import Workspace

LABELS = {"background": 0, "whole": [1, 2], "inner": [2]}
SCHEME = label_scheme(LABELS, [1, 2])


def test_predict_writes_sigmoid_probabilities_and_region_labels(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    make_fake_model(ws, n_labels=1, folds=(0,))  # a network with 2 outputs: one per region
    fp_path = ws.fingerprint_file("Dataset991_Fake")
    fp = DatasetFingerprint.load(fp_path)
    dataclasses.replace(fp, labels=LABELS, regions_class_order=(1, 2)).save(fp_path)
    inp = tmp_path / "in"
    inp.mkdir()
    write_case(inp, "a", (9, 17, 15), (2.0, 1.0, 1.0))
    out = tmp_path / "out"
    run_predict(ws, inp, out, dataset=991, device="cpu", save_probabilities=True, workers=1, backend="torch")
    probs = load_probabilities(out / "a.npz")
    labels, _ = read_label(out / "a.nii.gz")
    assert probs.shape == (2, 9, 17, 15) and probs.min() >= 0 and probs.max() <= 1
    assert not np.allclose(probs.sum(0), 1, atol=1e-2)  # independent sigmoids, not a softmax distribution
    clear = (np.abs(probs - 0.5) > 1e-2).all(0)  # away from the threshold (the file holds float16)
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(labels[clear], SCHEME.to_labels(probs)[clear])
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}


def test_ensemble_averages_sigmoid_probabilities_then_applies_regions_class_order(tmp_path):
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
    # one case of 4 voxels, (regions, 1, 1, 4): whole / inner probabilities of two members
    m1 = np.array([[0.9, 0.9, 0.2, 0.6], [0.8, 0.1, 0.9, 0.3]], np.float32).reshape(2, 1, 1, 4)
    m2 = np.array([[0.7, 0.3, 0.2, 0.2], [0.4, 0.1, 0.9, 0.9]], np.float32).reshape(2, 1, 1, 4)
    for name, m in (("m1", m1), ("m2", m2)):
        (tmp_path / name).mkdir()
        save_probabilities(tmp_path / name / "c.npz", m)
        write_label(tmp_path / name / "c.nii.gz", np.zeros((1, 1, 4), np.uint8), geo)
    ensemble_folders([tmp_path / "m1", tmp_path / "m2"], tmp_path / "ens", ".nii.gz", scheme=SCHEME)
    # mean whole [0.8, 0.6, 0.2, 0.4], mean inner [0.6, 0.1, 0.9, 0.6] -> whole writes 1, then inner writes 2
    assert read_label(tmp_path / "ens" / "c.nii.gz")[0].ravel().tolist() == [2, 1, 2, 2]
    ensemble_folders([tmp_path / "m1", tmp_path / "m2"], tmp_path / "argmax", ".nii.gz")
    assert read_label(tmp_path / "argmax" / "c.nii.gz")[0].ravel().tolist() == [0, 0, 1, 1]  # the softmax rule
