import math

import numpy as np
import pandas as pd
import pytest

from autoseg.data.geometry import Geometry
from autoseg.evaluation.statistics import case_statistics, write_statistics_csv

NAMES = {"background": 0, "liver": 1, "tumour": 2, "cyst": 3}


def _case():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, 0, :4] = 1  # 4 voxels
    labels[1:3, 1:4, 1:3] = 2  # 2 * 3 * 2 = 12 voxels
    image = np.zeros((2, 4, 5, 6), np.float32)
    image[0][labels == 1] = [1.0, 2.0, 3.0, 6.0]  # mean 3
    image[1][labels == 1] = 10.0
    image[0][labels == 2] = np.arange(12)  # mean 5.5
    image[1][labels == 2] = -4.0
    return labels, image


def test_volumes_with_anisotropic_spacing():
    labels, image = _case()
    geo = Geometry.identity((3.0, 0.8, 0.5))  # voxel volume 1.2 mm^3
    rows = case_statistics(labels, image, geo, NAMES, case_id="c1", channel_names=("T1", "T2"))
    by_label = {r["label"]: r for r in rows}
    assert list(by_label) == [1, 2, 3]
    assert by_label[1]["voxels"] == 4 and by_label[1]["volume_ml"] == pytest.approx(4 * 1.2 / 1000)
    assert by_label[2]["voxels"] == 12 and by_label[2]["volume_ml"] == pytest.approx(12 * 1.2 / 1000)
    assert by_label[1]["mean_intensity_0_T1"] == pytest.approx(3.0)
    assert by_label[1]["mean_intensity_1_T2"] == pytest.approx(10.0)
    assert by_label[2]["mean_intensity_0_T1"] == pytest.approx(5.5)
    assert by_label[2]["mean_intensity_1_T2"] == pytest.approx(-4.0)
    absent = by_label[3]
    assert absent["voxels"] == 0 and absent["volume_ml"] == 0.0 and math.isnan(absent["mean_intensity_0_T1"])
    assert absent["label_name"] == "cyst" and absent["case"] == "c1" and absent["area_mm2"] is None


def test_2d_gives_area_and_value_to_name_mapping():
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, :2, :3] = 1
    geo = Geometry.identity((0.5, 0.25), dim=2)
    rows = case_statistics(labels, None, geo, {0: "bg", 1: "cell"})
    assert len(rows) == 1
    row = rows[0]
    assert row["label_name"] == "cell" and row["voxels"] == 6
    assert row["area_mm2"] == pytest.approx(6 * 0.5 * 0.25) and row["volume_ml"] is None
    assert not any(k.startswith("mean_intensity") for k in row)


def test_shape_mismatch_is_an_error():
    labels, image = _case()
    with pytest.raises(ValueError, match="c9: image shape"):
        case_statistics(labels[:3], image, Geometry.identity(), NAMES, case_id="c9")


def test_csv_roundtrip(tmp_path):
    labels, image = _case()
    geo = Geometry.identity((2.0, 1.0, 1.0))
    rows = case_statistics(labels, image, geo, NAMES, "a") + case_statistics(
        labels[::-1], image[:, ::-1], geo, NAMES, "b"
    )
    path = write_statistics_csv(rows, tmp_path / "out" / "statistics.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == [
        "case", "label", "label_name", "voxels", "volume_ml", "area_mm2", "mean_intensity_0", "mean_intensity_1",
    ]  # fmt: skip
    assert len(table) == 6
    liver_b = table[(table.case == "b") & (table.label == 1)].iloc[0]
    assert liver_b.voxels == 4 and liver_b.volume_ml == pytest.approx(0.008)
    assert liver_b.mean_intensity_0 == pytest.approx(3.0)
    assert table.area_mm2.isna().all()
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind
