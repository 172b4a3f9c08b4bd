"""Fold validation and `autoseg predict` are one road: same case, same model -> bit-identical outputs on CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_cascade import NAME, cascade_plans, no_plot  # noqa: F401 - no_plot is a fixture

from autoseg.data.image_io import read_image, read_label
from autoseg.data.probabilities import load_probabilities
from autoseg.data.synthetic import make_synthetic_dataset
from autoseg.fingerprint.extract import fingerprint_dataset
from autoseg.inference.export import restore_probabilities
from autoseg.inference.predictor import Predictor, run_predict
from autoseg.inference.source import resolve_source
from autoseg.preprocessing.preprocess import preprocess_dataset
from autoseg.preprocessing.storage import load_case
from autoseg.training.config import TrainConfig
from autoseg.training.context import fold_context
from autoseg.training.run import train_folds
from autoseg.training.validation import fold_predictor
from autoseg.workspace import RunFolder, Workspace

pytestmark = pytest.mark.usefixtures("no_plot")
SETTINGS = {"epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1}  # val_tta and val_step: defaults


def test_fold_validation_and_predict_give_identical_probabilities_and_segmentations(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    raw = make_synthetic_dataset(ws.raw, n_cases=5, shape=(10, 16, 16), ct=False, oblique_every=2)
    fingerprint_dataset(ws, NAME, jobs=1)
    plans = cascade_plans()  # 3d_fullres resamples (2.5, 0.8, 0.8) mm to (2, 1, 1) mm: the export undoes it
    plans.save(ws.plans_file(NAME))
    preprocess_dataset(ws, NAME, plans, jobs=2)  # stored by worker processes, predict preprocesses in this one
    (result,) = train_folds(ws, NAME, ["3d_fullres"], [0], overrides=SETTINGS, device="cpu", num_workers=0)
    validation = RunFolder(result.run_dir).validation
    val_ids = json.loads(ws.splits_file(NAME).read_text())[0]["val"]
    assert val_ids and all((validation / f"{cid}.npz").is_file() for cid in val_ids)

    inp = tmp_path / "in"
    inp.mkdir()
    for cid in val_ids:
        shutil.copy(raw / "imagesTr" / f"{cid}_0000.nii.gz", inp)
    out = tmp_path / "out"
    run_predict(ws, inp, out, dataset=NAME, configuration="3d_fullres", folds=[0], save_probabilities=True,
                device="cpu", postprocess=False, backend="torch")  # fmt: skip  # the backend the validation uses
    for cid in val_ids:
        seg_val, geo_val = read_label(validation / f"{cid}.nii.gz")
        seg_pred, geo_pred = read_label(out / f"{cid}.nii.gz")
        assert geo_val == geo_pred
        np.testing.assert_array_equal(seg_val, seg_pred)
        assert len(np.unique(seg_pred)) > 1  # a trained model, not an all-background answer
        np.testing.assert_array_equal(
            load_probabilities(validation / f"{cid}.npz"), load_probabilities(out / f"{cid}.npz")
        )

    # the float32 probabilities too: the validation's predictor (the in-memory network) on the stored case, and
    # predict's (the final checkpoint) on the raw image
    predictor = Predictor(resolve_source(ws, NAME), "3d_fullres", [0], "cpu")
    fc = fold_context(ws, NAME, plans, "3d_fullres", 0, "default", write=False)
    validating = fold_predictor(predictor.models[0], fc, TrainConfig(**SETTINGS), torch.device("cpu"))
    for cid in val_ids:
        case = load_case(fc.data_folder, cid, mmap=False, with_locations=False)
        from_stored = restore_probabilities(*validating.preprocessed_output(case.data, case.properties))
        image, geometry = read_image([inp / f"{cid}_0000.nii.gz"])
        from_raw = predictor.probabilities(image, geometry)
        assert from_raw.dtype == np.float32 and from_raw.shape == (3, *image.shape[1:])
        np.testing.assert_array_equal(from_stored, from_raw)
