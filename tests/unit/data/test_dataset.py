"""dataset.json parsing and case listing edge cases (file pairing by case id, odd names, stray files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoseg.data.dataset import image_case_ids, list_cases, load_dataset, parse_dataset_json
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_image, write_label
from autoseg.data.verify import verify_dataset
from autoseg.errors import DatasetError

META = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1}, "numTraining": 2}


def make(folder: Path, images: list[str], label_files: list[str], **meta) -> Path:
    """A dataset folder with empty files of the given names (listing never reads them)."""
    for sub, names in (("imagesTr", images), ("labelsTr", label_files)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / sub / name).write_bytes(b"")
    (folder / "dataset.json").write_text(json.dumps({**META, "file_ending": ".nii.gz", **meta}))
    return folder


def test_case_id_that_prefixes_another(tmp_path):
    images = [f"{c}_{ch:04d}.nii.gz" for c in ("a", "a_0001", "case_1", "case_10") for ch in (0, 1)]
    labels = ["a.nii.gz", "a_0001.nii.gz", "case_1.nii.gz", "case_10.nii.gz"]
    spec = load_dataset(make(tmp_path / "D", images, labels, numTraining=4))
    cases, problems = list_cases(spec)
    assert problems == []
    assert [c.case_id for c in cases] == ["a", "a_0001", "case_1", "case_10"]
    by_id = {c.case_id: c for c in cases}
    assert [p.name for p in by_id["a_0001"].images] == ["a_0001_0000.nii.gz", "a_0001_0001.nii.gz"]
    assert [p.name for p in by_id["a"].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert by_id["case_1"].label.name == "case_1.nii.gz" and by_id["case_10"].label.name == "case_10.nii.gz"


def test_non_ascii_and_space_names_list_and_verify(tmp_path):
    folder = tmp_path / "Dataset001_Ünïcode data"
    geo = Geometry.identity((2.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    for cid in ("patiënt 01", "größe 2"):
        write_image(folder / "imagesTr" / f"{cid}_0000.nii.gz", rng.normal(size=(4, 5, 6)).astype(np.float32), geo)
        write_label(folder / "labelsTr" / f"{cid}.nii.gz", rng.integers(0, 2, (4, 5, 6)), geo)
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1}, "numTraining": 2}
    (folder / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii.gz"}), encoding="utf-8")
    cases, problems = list_cases(load_dataset(folder))
    assert problems == [] and [c.case_id for c in cases] == ["größe 2", "patiënt 01"]
    report = verify_dataset(folder, jobs=1)
    assert report.problems == () and report.n_cases == 2


def test_hidden_files_are_ignored_and_stray_entries_reported(tmp_path):
    images = ["x_0000.nii.gz", "x_0001.nii.gz", ".DS_Store", "._x_0000.nii.gz", "y_0000.nii"]
    folder = make(tmp_path / "D", images, ["x.nii.gz", "._x.nii.gz", "x.nrrd"], numTraining=1)
    (folder / "imagesTr" / "sub").mkdir()
    cases, problems = list_cases(load_dataset(folder))
    assert [c.case_id for c in cases] == ["x"]
    img, lab = folder / "imagesTr", folder / "labelsTr"
    assert sorted(problems) == sorted(
        [
            f"{img / 'sub'}: unexpected folder (only CASE_XXXX.nii.gz files belong here)",
            f"{img / 'y_0000.nii'}: file ending '.nii' differs from dataset.json's file_ending '.nii.gz'",
            f"{lab / 'x.nrrd'}: file ending differs from dataset.json's file_ending '.nii.gz'",
        ]
    )


def test_missing_channel_missing_label_and_case_count(tmp_path):
    folder = make(tmp_path / "D", ["x_0000.nii.gz", "x_0001.nii.gz", "y_0001.nii.gz"], ["z.nii.gz"])
    spec = load_dataset(folder)
    cases, problems = list_cases(spec)
    assert [c.case_id for c in cases] == ["x"] and cases[0].label is None
    assert image_case_ids(spec) == ["x", "y"]
    assert f"{folder / 'imagesTr' / 'y_0000.nii.gz'}: channel file is missing (case 'y')" in problems
    assert f"{folder / 'labelsTr' / 'x.nii.gz'}: label file is missing (case 'x')" in problems
    assert f"{folder / 'labelsTr' / 'z.nii.gz'}: label file has no matching image (z_0000.nii.gz)" in problems


def test_missing_folders(tmp_path):
    folder = make(tmp_path / "D", [], [])
    (folder / "labelsTr").rmdir()
    assert list_cases(load_dataset(folder))[1] == [f"{folder / 'labelsTr'}: folder is missing"]
    (folder / "imagesTr").rmdir()
    assert list_cases(load_dataset(folder)) == ([], [f"{folder / 'imagesTr'}: folder is missing"])


def test_rgb_png_spec_expects_one_file(tmp_path):
    meta = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "file_ending": ".png", "numTraining": 1}
    spec = load_dataset(make(tmp_path / "D", ["c_0000.png"], ["c.png"], **meta))
    assert spec.rgb and spec.num_channels == 3
    cases, problems = list_cases(spec)
    assert problems == [] and len(cases[0].images) == 1


@pytest.mark.parametrize(
    "meta, words",
    [
        ({"numTraining": True}, '"numTraining" must be a positive integer, found True (bool)'),
        ({"numTraining": 0}, '"numTraining" must be a positive integer'),
        ({"channel_names": {"0": "T1", "2": "T2"}}, '"channel_names" keys must be "0", "1", ... in order'),
        ({"channel_names": {"0": 1}}, '"channel_names" values must be strings'),
        ({"labels": {"a": 1, "b": 2}}, "must contain background = 0"),
        ({"labels": {"background": 0, "a": 1, "b": 1}}, "two label names share one value"),
        ({"labels": {"background": 0, "tumor": [1, 2]}}, '"regions_class_order" is missing'),
        ({"labels": {"background": 0, "a": 1, "ignore": 5}}, '"ignore" label must be the highest value, one above'),
        ({"labels": {"background": 0, "a": 1.5}}, "bad: {'a': 1.5}"),
        (
            {"labels": {"background": 0, "w": [1, 2], "p": 2}, "regions_class_order": [1]},
            '"regions_class_order" must be a list of 2 integers',
        ),
        ({"file_ending": "nii.gz"}, '"file_ending" must be a string like ".nii.gz"'),
        ({"file_ending": ".xyz"}, "'.xyz' is not supported"),
    ],
)
def test_parse_dataset_json_problems(tmp_path, meta, words):
    folder = make(tmp_path / "D", [], [], **meta)
    spec, problems = parse_dataset_json(folder)
    assert spec is None and len(problems) == 1
    assert problems[0].startswith(f"{folder / 'dataset.json'}: ") and words in problems[0]
    with pytest.raises(DatasetError, match="dataset.json"):
        load_dataset(folder)


def test_v1_modality_key_accepted_and_order_kept(tmp_path):
    folder = make(tmp_path / "D", [], [])
    data = json.loads((folder / "dataset.json").read_text())
    data["modality"] = {"1": "T2", "0": "T1"}
    del data["channel_names"]
    (folder / "dataset.json").write_text(json.dumps(data))
    spec = load_dataset(folder)
    assert spec.channel_names == ("T1", "T2") and spec.name == "D" and spec.label_values == (0, 1)
