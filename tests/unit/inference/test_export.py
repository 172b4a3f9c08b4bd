from __future__ import annotations

import numpy as np
import pytest

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_label
from autoseg.inference.export import restore_labels, restore_probabilities, write_segmentation
from autoseg.inference.exporter import thread_budget
from autoseg.planning.plans import Configuration, NetworkSpec
from autoseg.preprocessing.storage import CaseProperties
from autoseg.resources import usable_cores

CFG = Configuration(
    name="3d_fullres",
    data_identifier="3d_fullres",
    spacing=(1.0, 1.0, 1.0),
    patch_size=(8, 8, 8),
    median_shape=(8, 8, 8),
    batch_size=2,
    batch_dice=False,
    normalization=("zscore",),
    use_mask_for_norm=(False,),
    network=NetworkSpec("unet", {}),
)


def _props(**kw) -> CaseProperties:
    base = dict(
        case_id="c",
        geometry=Geometry.identity((1.0, 1.0, 1.0)),
        shape_before_crop=(6, 7, 8),
        bbox=((1, 5), (2, 7), (0, 8)),  # raw (z, y, x): crop shape (4, 5, 8)
        shape_after_crop=(8, 4, 5),  # transposed by (2, 0, 1)
        spacing=(1.0, 1.0, 1.0),
        target_spacing=(1.0, 1.0, 1.0),
        shape_after_resample=(8, 4, 5),
        transpose=(2, 0, 1),
    )
    base.update(kw)
    return CaseProperties(**base)


def test_restore_labels_uncrops_and_untransposes():
    raw = np.zeros((6, 7, 8), np.uint8)
    raw[1:5, 2:7, :] = np.arange(4 * 5 * 8).reshape(4, 5, 8) % 3
    pre = raw[1:5, 2:7, :].transpose(2, 0, 1).astype(np.int8)
    pre[0, 0, 0] = -1  # outside the nonzero mask -> background
    out = restore_labels(pre[None], _props(), CFG)
    expected = raw.copy()
    expected[1, 2, 0] = 0
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_restore_probabilities_places_channels_and_background():
    props = _props()
    probs = np.zeros((2, 8, 4, 5), np.float32)
    probs[1] = 0.25
    probs[0] = 0.75
    probs[1, 3, 2, 1] = 1.0  # transposed index (x=3, z=2, y=1) -> raw (z=1+2, y=2+1, x=3)
    out = restore_probabilities(probs, props, CFG)
    assert out.shape == (2, 6, 7, 8) and out.dtype == np.float32
    assert out[1, 3, 3, 3] == 1.0 and out[1, 1, 2, 0] == 0.25
    assert np.all(out[0, 0] == 1.0) and np.all(out[1, 0] == 0.0)  # outside the box


def test_restore_resamples_back_to_the_crop_shape():
    props = _props(target_spacing=(0.5, 0.5, 0.5), shape_after_resample=(16, 8, 10))
    probs = np.full((3, 16, 8, 10), 1 / 3, np.float32)
    out = restore_probabilities(probs, props, CFG)
    np.testing.assert_allclose(out[:, 1:5, 2:7, :], 1 / 3, atol=1e-6)
    labels = np.ones((16, 8, 10), np.int8)
    assert restore_labels(labels, props, CFG)[1:5, 2:7].min() == 1


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"prediction shape \(8, 4, 4\) differs"):
        restore_labels(np.zeros((8, 4, 4), np.int8), _props(), CFG)


def test_write_segmentation_keeps_geometry(tmp_path):
    geo = Geometry((2.0, 0.5, 0.7), (1.0, 2.0, 3.0), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0), 3)
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 2, 3] = 2
    arr, back = read_label(write_segmentation(tmp_path / "s.nii.gz", labels, geo))
    np.testing.assert_array_equal(arr, labels)
    assert back.matches(geo) == []


def test_an_export_uses_the_thread_budget_its_pool_worker_was_given(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what Exporter sets for its pool workers: cores / (workers + 1)
    assert thread_budget() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_budget() == usable_cores()
