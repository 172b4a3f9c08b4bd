"""Metrics with hand-computed answers, NaN rules, surface distances against brute force, the folder evaluator."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from autoseg.cli.main import main
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_image, write_label
from autoseg.errors import DatasetError
from autoseg.evaluation import metrics
from autoseg.evaluation.metrics import (
    case_metrics,
    evaluate_folder,
    label_metrics,
    save_evaluation,
    summary_table,
    surface_distances,
)


def _cube(shape=(10, 10, 10), start=(2, 2, 2), size=4) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


def test_overlap_metrics_exact_fractions_and_volumes():
    ref = np.zeros((2, 3, 4), bool)
    pred = np.zeros((2, 3, 4), bool)
    ref[0, 0, :4] = True  # 4 reference voxels
    pred[0, 0, 1:4] = True  # 3 of them found
    pred[1, 2, 2:4] = True  # 2 false positives
    m = label_metrics(pred, ref, spacing=(2.0, 1.0, 0.5))
    assert (m["tp"], m["fp"], m["fn"], m["n_ref"], m["n_pred"]) == (3, 2, 1, 4, 5)
    assert m["dice"] == pytest.approx(2 / 3)  # 2*3 / (6+2+1)
    assert m["iou"] == pytest.approx(1 / 2)  # 3 / (3+2+1)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["volume_ref_ml"] == pytest.approx(4 * 1.0 / 1000)  # voxel volume 2*1*0.5 = 1 mm^3
    assert m["volume_pred_ml"] == pytest.approx(5 / 1000)


def test_case_metrics_per_label_and_region():
    ref = np.array([[[0, 1, 1, 2, 2, 0]]] * 2)
    pred = np.array([[[0, 1, 2, 2, 2, 1]]] * 2)
    res = case_metrics(pred, ref, [1, 2, (1, 2)], spacing=(1.0, 1.0, 1.0))
    assert res[1]["dice"] == pytest.approx(2 * 2 / (4 + 2 + 2))  # tp 2, fp 2, fn 2
    assert res[2]["dice"] == pytest.approx(2 * 4 / (8 + 2 + 0))  # tp 4, fp 2, fn 0
    assert res[(1, 2)]["dice"] == pytest.approx(2 * 8 / (16 + 2 + 0))  # union: tp 8, fp 2


def test_hd95_offset_cubes_anisotropic_spacing():
    a = _cube()
    b = _cube(start=(3, 2, 2))  # shifted by one voxel along z (2 mm)
    d_ab, d_ba = surface_distances(a, b, spacing=(2.0, 1.0, 1.0))
    # 56 surface voxels: 36 on both surfaces (0 mm), 4 on the top face's inside (1 mm to the side faces),
    # 16 on the bottom face of a, 2 mm below b's bottom face
    assert sorted(d_ab.tolist()) == [0.0] * 36 + [1.0] * 4 + [2.0] * 16
    np.testing.assert_allclose(np.sort(d_ba), np.sort(d_ab))
    assert label_metrics(a, b, (2.0, 1.0, 1.0))["hd95"] == pytest.approx(2.0)
    # the same shift along x with 0.5 mm x spacing: every distance is 0 or 0.5 mm
    c = _cube(start=(2, 2, 3))
    assert label_metrics(a, c, (2.0, 1.0, 0.5))["hd95"] == pytest.approx(0.5)


def test_hd95_ignores_a_single_outlier_voxel_and_handles_2d():
    ref = np.zeros((1, 40, 40), bool)
    ref[0, 5:15, 5:15] = True
    pred = ref.copy()
    pred[0, 35, 35] = True  # 1 of 37 surface voxels far away: below the 95th percentile
    d_pr, _ = surface_distances(pred[0], ref[0], spacing=(1.0, 1.0))
    assert d_pr.max() == pytest.approx(math.hypot(21, 21))
    m = label_metrics(pred, ref, spacing=(999.0, 0.8, 0.8))  # 2D image: pseudo z spacing ignored
    assert m["hd95"] == 0.0
    assert m["volume_ref_ml"] == pytest.approx(100 * 0.64 / 1000)


def _surface_brute(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, ndimage.generate_binary_structure(3, 1), border_value=0)


def test_surface_distances_match_brute_force():
    rng = np.random.default_rng(0)
    spacing = (1.5, 0.7, 1.1)
    for _ in range(3):
        pred = np.zeros((12, 14, 13), bool)
        ref = np.zeros((12, 14, 13), bool)
        pred[3:9, 2:10, 4:11] = rng.random((6, 8, 7)) > 0.3
        ref[2:8, 5:13, 1:8] = rng.random((6, 8, 7)) > 0.3
        d_pr, d_rp = surface_distances(pred, ref, spacing)
        ps = np.argwhere(_surface_brute(pred)) * spacing
        rs = np.argwhere(_surface_brute(ref)) * spacing
        np.testing.assert_allclose(np.sort(d_pr), np.sort(cdist(ps, rs).min(1)), rtol=1e-6)
        np.testing.assert_allclose(np.sort(d_rp), np.sort(cdist(rs, ps).min(1)), rtol=1e-6)


def test_surface_dice_tolerances():
    a, b = _cube(), _cube(start=(3, 2, 2))
    sp = (2.0, 1.0, 1.0)
    assert label_metrics(a, b, sp, tolerance_mm=0.0)["nsd"] == pytest.approx(36 / 56)
    assert label_metrics(a, b, sp, tolerance_mm=1.5)["nsd"] == pytest.approx(40 / 56)
    assert label_metrics(a, b, sp, tolerance_mm=10.0)["nsd"] == 1.0
    assert label_metrics(a, a, sp, tolerance_mm=0.0)["nsd"] == 1.0


def test_nan_rules():
    empty = np.zeros((4, 4, 4), bool)
    full = _cube((4, 4, 4), (1, 1, 1), 2)
    both = label_metrics(empty, empty, (1, 1, 1))
    for key in ("dice", "iou", "precision", "recall", "hd95", "nsd"):
        assert math.isnan(both[key]), key
    assert both["tp"] == both["fp"] == both["fn"] == 0
    missed = label_metrics(empty, full, (1, 1, 1))  # nothing predicted
    assert (missed["dice"], missed["iou"], missed["recall"], missed["nsd"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(missed["precision"]) and missed["hd95"] == math.inf
    spurious = label_metrics(full, empty, (1, 1, 1))  # prediction where there is nothing
    assert (spurious["dice"], spurious["precision"], spurious["nsd"]) == (0.0, 0.0, 0.0)
    assert math.isnan(spurious["recall"]) and spurious["hd95"] == math.inf


def _write_cases(folder, cases: dict, ending=".nii.gz", spacing=(2.0, 1.0, 1.0)):
    geo = Geometry.identity(spacing)
    for cid, arr in cases.items():
        write_label(folder / f"{cid}{ending}", arr, geo)


def _label_map(*cubes) -> np.ndarray:
    seg = np.zeros((10, 10, 10), np.uint8)
    for label, start in cubes:
        seg[_cube(start=start)] = label
    return seg


@pytest.fixture
def folders(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write_cases(ref, {"a": _label_map((1, (2, 2, 2))), "b": _label_map((1, (1, 1, 1)))})
    # a: label 1 exact, label 2 predicted where absent; b: label 1 shifted one voxel along z, label 2 empty in both
    _write_cases(pred, {"a": _label_map((1, (2, 2, 2)), (2, (6, 6, 6))), "b": _label_map((1, (2, 1, 1)))})
    return ref, pred


def test_evaluate_folder_means_and_nan_skipping(folders):
    ref, pred = folders
    df, summary = evaluate_folder(ref, pred, [1, 2], ".nii.gz", jobs=1)
    assert list(df["case"]) == ["a", "a", "b", "b"] and list(df["label"]) == ["1", "2", "1", "2"]
    b1 = df[(df.case == "b") & (df.label == "1")].iloc[0]
    assert b1["dice"] == pytest.approx(2 * 48 / (96 + 16 + 16)) and b1["hd95"] == pytest.approx(2.0)
    assert summary["mean"]["1"]["dice"] == pytest.approx((1.0 + 0.75) / 2)
    assert summary["mean"]["2"]["dice"] == 0.0  # case b's NaN is skipped
    assert summary["mean"]["2"]["hd95"] == math.inf  # case a: predicted but absent
    assert summary["foreground_mean"]["dice"] == pytest.approx((0.875 + 0.0) / 2)
    assert summary["mean_dice"] == summary["foreground_mean"]["dice"] and summary["num_cases"] == 2
    df2, summary2 = evaluate_folder(ref, pred, [1, 2], ".nii.gz", jobs=2)
    pd.testing.assert_frame_equal(df, df2)
    assert "fg mean" in summary_table(summary) and "0.4375" in summary_table(summary)


def test_save_evaluation_round_trip(folders, tmp_path):
    df, summary = evaluate_folder(*folders, [1, 2], ".nii.gz", jobs=1)
    csv_path, json_path = save_evaluation(df, summary, tmp_path / "out")
    back = pd.read_csv(csv_path)
    assert back.shape == df.shape and math.isnan(back["dice"][3]) and back["hd95"][1] == math.inf
    data = json.loads(json_path.read_text())
    assert data["mean"]["2"]["hd95"] == "inf" and data["mean"]["2"]["recall"] is None
    assert data["foreground_mean"]["dice"] == pytest.approx(0.4375)


def test_evaluate_folder_errors_name_the_files(folders):
    ref, pred = folders
    with pytest.raises(DatasetError, match=r"ref/c.nii.gz: reference missing \(no such file\)"):
        _write_cases(pred, {"c": _label_map()})
        evaluate_folder(ref, pred, [1], ".nii.gz", jobs=1)
    (pred / "c.nii.gz").unlink()
    with pytest.raises(DatasetError, match="zz.nii.gz: prediction missing"):
        evaluate_folder(ref, pred, [1], ".nii.gz", case_ids=["a", "zz"], jobs=1)
    write_label(pred / "a.nii.gz", np.zeros((10, 10, 9), np.uint8), Geometry.identity())
    with pytest.raises(DatasetError, match=r"a.nii.gz: shape \(10, 10, 9\) differs from the reference"):
        evaluate_folder(ref, pred, [1], ".nii.gz", jobs=1)
    with pytest.raises(DatasetError, match="no predictions ending in '.png'"):
        evaluate_folder(ref, pred, [1], ".png", jobs=1)


def test_evaluate_folder_names_every_bad_file_before_scoring(folders, monkeypatch):
    """Missing, empty, truncated and mismatched files of several cases are all named in one error, and no case is
    scored before (the metrics are never computed)."""
    ref, pred = folders
    _write_cases(ref, {c: _label_map((1, (2, 2, 2))) for c in ("c", "d", "e", "f")})
    _write_cases(pred, {c: _label_map((1, (2, 2, 2))) for c in ("c", "d", "e", "g")})  # f: no prediction
    (pred / "b.nii.gz").write_bytes(b"")
    data = (ref / "c.nii.gz").read_bytes()
    (ref / "c.nii.gz").write_bytes(data[: len(data) // 2])
    write_label(pred / "d.nii.gz", np.zeros((10, 10, 9), np.uint8), Geometry.identity())
    monkeypatch.setattr(metrics, "case_metrics", lambda *a, **k: pytest.fail("a case was scored"))
    with pytest.raises(DatasetError) as info:
        evaluate_folder(ref, pred, [1], ".nii.gz", case_ids=["a", "b", "c", "d", "e", "f", "g"], jobs=1)
    lines = str(info.value).splitlines()
    assert len(lines) == 6 and lines[0] == "5 input problems:", lines
    assert lines[1] == f"  {pred / 'b.nii.gz'}: file is empty (0 bytes)"
    assert lines[2].startswith(f"  {ref / 'c.nii.gz'}: ") and "truncated" in lines[2]
    assert (
        lines[3]
        == f"  {pred / 'd.nii.gz'}: shape (10, 10, 9) differs from the reference {ref / 'd.nii.gz'} (10, 10, 10)"
    )
    assert lines[4] == f"  {pred / 'f.nii.gz'}: prediction missing (no such file)"
    assert lines[5] == f"  {ref / 'g.nii.gz'}: reference missing (no such file)"


def test_problems_found_while_scoring_are_named_together(folders):
    """Non-integer label maps (visible only in the voxels) of two cases: both named at the end, nothing returned."""
    ref, pred = folders
    geo = Geometry.identity((2.0, 1.0, 1.0))
    for folder, cid in ((pred, "a"), (ref, "b")):
        write_label(folder / f"{cid}.nii.gz", np.zeros((10, 10, 10), np.uint8), geo)
        arr = np.full((10, 10, 10), 0.5, np.float32)
        write_image(folder / f"{cid}.nii.gz", arr, geo)
    for jobs in (1, 2):
        with pytest.raises(DatasetError) as info:
            evaluate_folder(ref, pred, [1], ".nii.gz", jobs=jobs)
        assert str(info.value).splitlines() == [
            "2 input problems:",
            f"  {pred / 'a.nii.gz'}: label map holds non-integer values; labels must be integers",
            f"  {ref / 'b.nii.gz'}: label map holds non-integer values; labels must be integers",
        ]


def test_cli_evaluate_names_every_bad_file_and_writes_nothing(folders, tmp_path, capsys):
    ref, pred = folders
    _write_cases(ref, {"c": _label_map((1, (2, 2, 2)))})  # c: reference without a prediction
    (pred / "a.nii.gz").write_bytes(b"")
    (ref / "b.nii.gz").write_bytes(b"\x1f\x8b" + b"junk" * 50)
    out = tmp_path / "metrics"
    argv = ["evaluate", "--workspace", str(tmp_path / "ws"), "-r", str(ref), "-p", str(pred), "-o", str(out)]
    rc = main(argv)  # no --labels: the labels would be read from the references, after the check
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "3 input problems:" in err
    assert f"{ref / 'c.nii.gz'}: reference has no prediction ({pred / 'c.nii.gz'} does not exist)" in err
    assert f"{pred / 'a.nii.gz'}: file is empty (0 bytes)" in err
    assert f"{ref / 'b.nii.gz'}: cannot be read" in err
    assert not out.exists() and not list(pred.glob("*.csv")) and not list(pred.glob("*.json"))
