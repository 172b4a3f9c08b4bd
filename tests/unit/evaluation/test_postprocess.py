"""Postprocessing: largest-component removal and the cross-validation decision, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from autoseg.evaluation.postprocess import (
    Postprocessing,
    apply_postprocessing,
    determine_postprocessing,
    keep_largest_component,
)
from autoseg.serialization import dumps, from_json, load_json


def _blob(shape=(4, 8, 8)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_keep_largest_component_full_connectivity():
    m = np.zeros((3, 5, 5), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # diagonal neighbours: one component under 26-connectivity
    m[2, 4, 4] = True
    kept = keep_largest_component(m)
    assert kept.sum() == 2 and kept[0, 0, 0] and kept[1, 1, 1] and not kept[2, 4, 4]
    assert not keep_largest_component(np.zeros((2, 2), bool)).any()


def test_apply_postprocessing_joint_then_per_label():
    seg = np.zeros((1, 3, 9), np.uint8)
    seg[0, :, 0:3] = 1  # 9 voxels of label 1 ...
    seg[0, 0, 3] = 2  # ... touching 1 voxel of label 2: one foreground component of 10
    seg[0, 0, 6:9] = 2  # a separate 3-voxel island of label 2
    joint = apply_postprocessing(seg, [(1, 2)])
    expected = seg.copy()
    expected[0, 0, 6:9] = 0
    np.testing.assert_array_equal(joint, expected)
    per_label = apply_postprocessing(seg, [(2,)])  # label 2's largest component is the island (3 > 1)
    expected = seg.copy()
    expected[0, 0, 3] = 0
    np.testing.assert_array_equal(per_label, expected)
    assert apply_postprocessing(seg, []) is seg


def test_largest_component_step_helps_and_is_accepted():
    ref, pred = _blob(), _blob()
    ref[1:3, 1:3, 1:3] = 1  # 8 voxels
    pred[1:3, 1:3, 1:3] = 1
    pred[0, 6:8, 6] = 1  # a 2-voxel false-positive island
    post = determine_postprocessing([(pred, ref)], foreground_labels=[1])
    assert post.steps == ((1,),)
    assert post.dice_before["1"] == pytest.approx(16 / 18)
    assert post.dice_after["1"] == pytest.approx(1.0)
    np.testing.assert_array_equal(apply_postprocessing(pred, post.steps), ref)


def _two_label_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """4 cases: label 1 = a 12-voxel blob plus a 10-voxel false island; label 2 correct, touching label 1 in three
    cases and separate in the fourth (the joint step deletes it there)."""
    cases = []
    for i in range(4):
        ref = np.zeros((3, 10, 10), np.uint8)
        ref[0:3, 0:2, 0:2] = 1  # 12 voxels
        if i < 3:
            ref[0, 2, 0:2] = 2  # touches label 1
        else:
            ref[0, 6:8, 0] = 2  # far from label 1
        pred = ref.copy()
        pred[0:2, 7:9, 5:8] = 1  # a 2x2x3 false island ...
        pred[1, 8, 7] = pred[1, 8, 6] = 0  # ... cut to 10 voxels, so the 12-voxel blob stays the largest
        cases.append((pred, ref))
    return cases


def test_joint_step_that_hurts_one_label_is_rejected_but_per_label_step_is_taken():
    cases = _two_label_cases()
    d1_before = 2 * 12 / (22 + 12)  # label 1: TP 12, predicted 22, reference 12
    # check the premise: the joint step raises the mean Dice but lowers label 2's Dice
    joint = [(apply_postprocessing(p, [(1, 2)]), r) for p, r in cases]
    label2_joint = np.mean([1.0 if (p == 2).any() else 0.0 for p, _ in joint])
    assert label2_joint == 0.75
    assert (1.0 + 0.75) / 2 > (d1_before + 1.0) / 2
    post = determine_postprocessing(cases, foreground_labels=[1, 2])
    assert post.steps == ((1,),)  # joint rejected (label 2 worse); label 1 alone accepted
    assert post.dice_before == pytest.approx({"1": d1_before, "2": 1.0, "mean": (d1_before + 1) / 2})
    assert post.dice_after == pytest.approx({"1": 1.0, "2": 1.0, "mean": 1.0})
    for pred, ref in cases:
        np.testing.assert_array_equal(apply_postprocessing(pred, post.steps), ref)


def test_no_step_when_nothing_improves_and_json_round_trip(tmp_path):
    ref = _blob()
    ref[0:2, 0:2, 0:2] = 1
    ref[3, 6:8, 6:8] = 2
    post = determine_postprocessing([(ref.copy(), ref)], foreground_labels=[1, 2])
    assert post.steps == ()
    assert post.describe() == "none"
    label_absent = determine_postprocessing([(ref, ref)], foreground_labels=[1, 2, 3])
    assert label_absent.dice_before["3"] is None  # no case has label 3: NaN stored as null
    path = tmp_path / "pp.json"
    path.write_text(dumps(Postprocessing(((1, 2), (2,)), {"1": 0.5, "mean": 0.5}, None)))
    loaded = from_json(Postprocessing, load_json(path))
    assert loaded.steps == ((1, 2), (2,))
    assert "labels 1+2; keep the largest component of labels 2" in loaded.describe()
