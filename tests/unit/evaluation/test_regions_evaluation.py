"""Metrics and postprocessing per region, with the ignore label left out of every count."""

import json

import numpy as np
import pytest

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_label
from autoseg.evaluation.metrics import case_metrics, evaluate_folder
from autoseg.evaluation.postprocess import apply_postprocessing, determine_postprocessing
from autoseg.evaluation.select import evaluate_predictions
from autoseg.workspace import Workspace

REGIONS = ((1, 2), (2,))


def line(values) -> np.ndarray:
    return np.array(values, dtype=np.uint8).reshape(1, 1, -1)


def test_case_metrics_per_region_leave_out_ignored_voxels():
    ref = line([1, 1, 2, 2, 3, 3, 0, 0])
    pred = line([1, 2, 2, 0, 1, 2, 2, 0])
    m = case_metrics(pred, ref, REGIONS, (1.0, 1.0, 1.0), ignore_label=3)
    # whole {1,2}: ref voxels 0-3, pred 0, 1, 2, 6 (4, 5 are ignored): TP 3, FP 1, FN 1
    assert (m[(1, 2)]["tp"], m[(1, 2)]["fp"], m[(1, 2)]["fn"]) == (3, 1, 1)
    assert m[(1, 2)]["dice"] == pytest.approx(6 / 8)
    # inner {2}: ref 2, 3; pred 1, 2, 6: TP 1, FP 2, FN 1
    assert (m[(2,)]["tp"], m[(2,)]["fp"], m[(2,)]["fn"]) == (1, 2, 1)
    plain = case_metrics(pred, ref, REGIONS, (1.0, 1.0, 1.0))
    assert plain[(1, 2)]["fp"] == 3  # without the ignore label voxels 4 and 5 are false positives


def test_evaluate_folder_keys_regions_and_skips_ignore(tmp_path):
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    write_label(tmp_path / "ref" / "c.nii.gz", line([1, 1, 2, 2, 3, 3, 0, 0]), geo)
    write_label(tmp_path / "pred" / "c.nii.gz", line([1, 1, 2, 2, 1, 2, 0, 0]), geo)
    df, summary = evaluate_folder(tmp_path / "ref", tmp_path / "pred", REGIONS, ".nii.gz", jobs=1, ignore_label=3)
    assert summary["labels"] == ["1,2", "2"] and summary["mean_dice"] == 1.0
    _, without = evaluate_folder(tmp_path / "ref", tmp_path / "pred", REGIONS, ".nii.gz", jobs=1)
    assert without["mean_dice"] < 1.0


def test_postprocessing_decided_per_region():
    ref = line([1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0])
    pred = line([1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 1, 0])  # a stray "whole" voxel at 10
    pp = determine_postprocessing([(pred, ref)], REGIONS)
    assert pp.steps == ((1, 2),)  # the joint step (union of every region's values) removes it
    assert pp.dice_before["1,2"] == pytest.approx(8 / 9) and pp.dice_after["1,2"] == 1.0
    assert set(pp.dice_before) == {"1,2", "2", "mean"}
    assert apply_postprocessing(pred, pp.steps).ravel().tolist() == ref.ravel().tolist()


def test_postprocessing_region_step_on_its_own():
    # inner {2} has a stray voxel 8 inside a correct second "whole" blob 6-9: the joint step would delete that blob
    # (two equal components, the first is kept) and is rejected; the inner region's own step removes voxel 8
    ref = line([1, 2, 2, 1, 0, 0, 1, 1, 1, 1, 0])
    pred = line([1, 2, 2, 1, 0, 0, 1, 1, 2, 1, 0])
    pp = determine_postprocessing([(pred, ref)], REGIONS)
    assert pp.steps == ((2,),) and pp.dice_before["2"] == pytest.approx(0.8) and pp.dice_after["2"] == 1.0


def test_postprocessing_ignores_what_the_ignore_label_hides():
    ref = line([1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 3, 0])
    pred = line([1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 1, 0])  # the stray voxel lies on an ignored voxel: nothing to gain
    assert determine_postprocessing([(pred, ref)], REGIONS, ignore_label=3).steps == ()
    assert determine_postprocessing([(pred, ref)], REGIONS).steps == ((1, 2),)


def test_evaluate_with_a_region_dataset_scores_per_region(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    raw = ws.raw / "Dataset996_R"
    raw.mkdir(parents=True)
    meta = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "whole": [1, 2], "inner": 2, "ignore": 3},
            "regions_class_order": [1, 2], "numTraining": 1, "file_ending": ".nii.gz"}  # fmt: skip
    (raw / "dataset.json").write_text(json.dumps(meta))
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
    for folder, values in (("ref", [1, 1, 2, 2, 3, 3, 0]), ("pred", [1, 2, 2, 0, 1, 1, 0])):
        (tmp_path / folder).mkdir()
        write_label(tmp_path / folder / "c.nii.gz", line(values), geo)
    summary, csv_path, _ = evaluate_predictions(ws, tmp_path / "ref", tmp_path / "pred", dataset=996)
    assert summary["labels"] == ["1,2", "2"]
    assert summary["mean"]["1,2"]["dice"] == pytest.approx(6 / 7)  # TP 3, FN 1; voxels 4, 5 ignored
    assert summary["mean"]["2"]["dice"] == pytest.approx(2 / 4)  # TP voxel 2, FP voxel 1, FN voxel 3
    assert csv_path.is_file()
