import json
import shutil

import matplotlib.image as mpimg
import numpy as np
import pytest

from autoseg.cli.main import main
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_label, write_image, write_label
from autoseg.errors import DatasetError, ImageIOError
from autoseg.evaluation.overlay import busiest_slice, intensity_window, overlay_dataset, render_case

BLUE = np.array([31, 119, 180]) / 255  # tab10 colour of label 1
ORANGE = np.array([255, 127, 14]) / 255  # label 2


def _has_colour(png: np.ndarray, colour: np.ndarray, tol: float = 0.08) -> int:
    return int((np.abs(png[..., :3] - colour).max(-1) < tol).sum())


def _make_2d_dataset(raw, n=2):
    folder = raw / "Dataset997_Cells"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    yy, xx = np.mgrid[:40, :50]
    for i in range(n):
        disk = (yy - 20) ** 2 + (xx - 20 - 3 * i) ** 2 < 100
        image = np.where(disk, 200, 40).astype(np.uint8)[None]
        geo = Geometry.identity((1.0, 1.0), dim=2)
        write_image(folder / "imagesTr" / f"cell_{i}_0000.png", image, geo)
        write_label(folder / "labelsTr" / f"cell_{i}.png", disk.astype(np.uint8)[None], geo)
    meta = {"channel_names": {"0": "microscopy"}, "labels": {"background": 0, "cell": 1}, "numTraining": n}
    (folder / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".png"}))
    return folder


def test_3d_overlays_have_the_panel_size(workspace, synthetic, tmp_path):
    synthetic(n_cases=3)
    files = overlay_dataset(workspace, "999", tmp_path / "qc", max_cases=2, panel_px=128)
    assert [f.name for f in files] == ["case_000.png", "case_001.png"]
    png = mpimg.imread(files[0])
    assert png.shape[:2] == (128, 3 * 128)  # three viewing axes
    assert _has_colour(png, BLUE) > 20 and _has_colour(png, ORANGE) > 5  # both organs' contours drawn
    one = overlay_dataset(workspace, "999", tmp_path / "qc1", cases=["case_002"], all_axes=False, panel_px=100)
    assert [f.name for f in one] == ["case_002.png"] and mpimg.imread(one[0]).shape[:2] == (100, 100)
    assert not [p for p in (tmp_path / "qc").iterdir() if p.name.startswith(".")]  # atomic: no temp files left


def test_2d_overlay(workspace, tmp_path):
    _make_2d_dataset(workspace.raw)
    files = overlay_dataset(workspace, "997", tmp_path / "qc", panel_px=160)
    assert len(files) == 2
    png = mpimg.imread(files[1])
    assert png.shape[:2] == (160, 160)  # 2D: a single panel
    assert _has_colour(png, BLUE) > 20


def test_predictions_are_drawn_and_select_cases(workspace, synthetic, tmp_path):
    folder = synthetic(n_cases=3, n_test=1)
    pred_dir = tmp_path / "pred"
    label, geo = read_label(folder / "labelsTr" / "case_001.nii.gz")
    write_label(pred_dir / "case_001.nii.gz", np.roll(label, 3, axis=2), geo)
    ref0, test_geo = read_label(folder / "labelsTr" / "case_000.nii.gz")
    shutil.copy(folder / "imagesTr" / "case_000_0000.nii.gz", folder / "imagesTs" / "case_003_0000.nii.gz")
    test_label = np.zeros_like(ref0)  # the test image now has case_000's grid
    test_label[4:8, 8:14, 8:14] = 2
    write_label(pred_dir / "case_003.nii.gz", test_label, test_geo)
    files = overlay_dataset(workspace, "999", tmp_path / "qc", pred_dir=pred_dir, panel_px=128, all_axes=False)
    assert [f.name for f in files] == ["case_001.png", "case_003.png"]  # every predicted case, train or test
    plain = overlay_dataset(workspace, "999", tmp_path / "plain", cases=["case_001"], panel_px=128, all_axes=False)
    with_pred, without = mpimg.imread(files[0]), mpimg.imread(plain[0])
    assert with_pred.shape == without.shape
    assert _has_colour(with_pred, BLUE) > _has_colour(without, BLUE)  # the dashed prediction contour adds pixels
    assert _has_colour(mpimg.imread(files[1]), ORANGE) > 10  # test case: prediction only


def test_errors_name_the_problem(workspace, synthetic, tmp_path):
    folder = synthetic(n_cases=2)
    with pytest.raises(DatasetError, match=r"case\(s\) case_042 not found \(cases: case_000, case_001\)"):
        overlay_dataset(workspace, "999", tmp_path / "qc", cases=["case_042"])
    with pytest.raises(DatasetError, match="nowhere: prediction folder not found"):
        overlay_dataset(workspace, "999", tmp_path / "qc", pred_dir=tmp_path / "nowhere")
    label, geo = read_label(folder / "labelsTr" / "case_000.nii.gz")
    write_label(tmp_path / "bad" / "case_000.nii.gz", label[:-1], geo)
    with pytest.raises(ImageIOError, match=r"bad/case_000.nii.gz: shape .* differs from the image"):
        overlay_dataset(workspace, "999", tmp_path / "qc", pred_dir=tmp_path / "bad")


def test_window_and_slice_rules():
    values = np.concatenate([np.full(900, -1000.0), np.linspace(0, 100, 101)])
    lo, hi = intensity_window(values)
    assert lo == pytest.approx(0.5, abs=0.01) and hi == pytest.approx(99.5, abs=0.01)  # air left out
    assert intensity_window(np.zeros(10)) == (0.0, 1.0)
    mask = np.zeros((5, 6, 7), bool)
    mask[1, :3, :3] = True
    mask[3, :2, :2] = True
    assert busiest_slice(mask, 0) == 1 and busiest_slice(mask, 2) in (0, 1)
    assert busiest_slice(np.zeros((5, 6, 7), bool), 1) == 3
    with pytest.raises(ValueError, match="label shape"):
        render_case(np.zeros((1, 2, 3, 4)), Geometry.identity(), np.zeros((2, 3, 5)), None, {1: "a"}, "x")


def test_cli_overlay(workspace, synthetic, tmp_path, capsys):
    synthetic(n_cases=2)
    out = tmp_path / "qc"
    code = main(["overlay", "--workspace", str(workspace.root), "-d", "999", "-o", str(out), "-n", "1", "--size", "96"])
    assert code == 0 and "wrote 1 PNG file(s)" in capsys.readouterr().out
    assert mpimg.imread(out / "case_000.png").shape[:2] == (96, 288)
