"""`autoseg verify`: a corpus of broken datasets (one defect each) run through the real CLI, and valid datasets."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoseg.cli.main import main
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, write_image, write_label
from autoseg.data.synthetic import oblique_direction
from autoseg.data.verify import scan_nifti, verify_dataset

BASES = {
    "nii": dict(n_cases=3, shape=(8, 10, 12)),
    "nii2ch": dict(n_cases=3, shape=(8, 10, 12), n_channels=2),
    "mha": dict(n_cases=3, shape=(8, 10, 12), file_ending=".mha"),
    "png": dict(n_cases=3, shape=(1, 32, 32), ct=False, file_ending=".png"),
}


def make_rgb_dataset(raw: Path, n_cases: int = 3) -> Path:
    folder = raw / "Dataset999_RGB"
    rng = np.random.default_rng(0)
    geo = Geometry.identity((1.0, 1.0), dim=2)
    for i in range(n_cases):
        write_image(
            folder / "imagesTr" / f"img{i}_0000.png", rng.integers(0, 255, (3, 1, 20, 24)).astype(np.uint8), geo
        )
        lab = np.zeros((1, 20, 24), np.uint8)
        lab[0, 5:12, 6:15] = 1
        write_label(folder / "labelsTr" / f"img{i}.png", lab, geo)
    meta = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "cell": 1}}
    meta.update(numTraining=n_cases, file_ending=".png")
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


# ---- defect helpers -------------------------------------------------------------------------------------------
def edit_json(folder: Path, **changes) -> None:
    path = folder / "dataset.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def rewrite(path: Path, fn=None, geo_fn=None, new_path: Path | None = None, label: bool = False) -> None:
    arr, geo = read_file(path)
    arr = arr[0] if arr.shape[0] == 1 else arr
    arr = fn(arr) if fn else arr
    geo = geo_fn(geo) if geo_fn else geo
    if new_path is not None:
        path.unlink()
    target = new_path or path
    (write_label if label else write_image)(target, arr, geo)


def scaled_spacing(geo: Geometry) -> Geometry:
    return Geometry(tuple(s * 1.5 for s in geo.spacing), geo.origin, geo.direction, geo.dim)


def moved_origin(geo: Geometry) -> Geometry:
    return Geometry(geo.spacing, tuple(o + 7.0 for o in geo.origin), geo.direction, geo.dim)


def rotated(geo: Geometry) -> Geometry:
    return Geometry(geo.spacing, geo.origin, oblique_direction(0.8), geo.dim)


def with_value(value, dtype=np.uint8):
    def fn(arr):
        arr = arr.astype(dtype)
        arr.flat[0] = value
        return arr

    return fn


def mha_header(path: Path, old: str, new: str) -> None:
    data = path.read_bytes()
    end = data.index(b"ElementDataFile")
    head = re.sub(old.encode(), new.encode(), data[:end])
    path.write_bytes(head + data[end:])


def make_4d(path: Path) -> None:
    """Replace a 3D .nii.gz by a 4D one holding two volumes (header patch: dim[0]=4, dim[4]=2)."""
    arr, geo = read_file(path)
    tmp = path.with_name("tmp.nii")
    write_image(tmp, np.concatenate([arr[0], arr[0]]), geo, compress=False)
    raw = bytearray(tmp.read_bytes())
    tmp.unlink()
    dims = list(struct.unpack("<8h", raw[40:56]))
    dims[0], dims[3], dims[4] = 4, arr.shape[1], 2
    raw[40:56] = struct.pack("<8h", *dims)
    path.write_bytes(gzip.compress(bytes(raw)))


def to_2d(folder: Path, case: str) -> None:
    for path in [folder / "imagesTr" / f"{case}_0000.nii.gz", folder / "labelsTr" / f"{case}.nii.gz"]:
        arr, _ = read_file(path)
        write_image(path, arr[0, :1], Geometry.identity((0.8, 0.8), dim=2))


IMG, LAB = "imagesTr", "labelsTr"
C1, C1L = f"{IMG}/case_001_0000.nii.gz", f"{LAB}/case_001.nii.gz"

# (id, base, defect(folder), offending path (relative to the dataset folder), regex of defect words)
CORPUS = [
    ("json_missing", "nii", lambda f: (f / "dataset.json").unlink(), "dataset.json", r"dataset\.json is missing"),
    ("json_invalid", "nii", lambda f: (f / "dataset.json").write_text("{oops"), "dataset.json", r"not valid JSON"),
    ("json_not_object", "nii", lambda f: (f / "dataset.json").write_text("[1]"), "dataset.json", r"JSON object"),
    ("json_key_missing", "nii", lambda f: edit_json(f, labels=None), "dataset.json", r"'labels' is missing"),
    ("num_training_str", "nii", lambda f: edit_json(f, numTraining="3"), "dataset.json", r"numTraining.*integer"),
    ("channel_names_list", "nii", lambda f: edit_json(f, channel_names=["CT"]), "dataset.json", r"channel_names"),
    ("labels_not_int", "nii", lambda f: edit_json(f, labels={"background": "0", "a": 1}), "dataset.json", r"integer"),
    ("lossy_ending", "nii", lambda f: edit_json(f, file_ending=".jpg"), "dataset.json", r"lossy"),
    (
        "labels_not_consecutive",
        "nii",
        lambda f: edit_json(f, labels={"background": 0, "organ1": 1, "organ2": 3}),
        "dataset.json",
        r"consecutive",
    ),
    ("count_mismatch", "nii", lambda f: edit_json(f, numTraining=5), "dataset.json", r"numTraining is 5 but 3 cases"),
    (
        "channel_missing",
        "nii2ch",
        lambda f: (f / IMG / "case_001_0001.nii.gz").unlink(),
        f"{IMG}/case_001_0001.nii.gz",
        r"channel file is missing",
    ),
    ("label_missing", "nii", lambda f: (f / C1L).unlink(), C1L, r"label file is missing"),
    (
        "label_unmatched",
        "nii",
        lambda f: shutil.copy(f / C1L, f / LAB / "case_009.nii.gz"),
        f"{LAB}/case_009.nii.gz",
        r"no matching image",
    ),
    (
        "channel_undeclared",
        "nii",
        lambda f: shutil.copy(f / C1, f / IMG / "case_001_0001.nii.gz"),
        f"{IMG}/case_001_0001.nii.gz",
        r"channel 1 is not declared",
    ),
    (
        "bad_file_name",
        "nii",
        lambda f: shutil.copy(f / C1, f / IMG / "notes_01.nii.gz"),
        f"{IMG}/notes_01.nii.gz",
        r"does not follow CASE_XXXX",
    ),
    (
        "wrong_ending",
        "nii",
        lambda f: rewrite(f / C1, new_path=f / IMG / "case_001_0000.nrrd"),
        f"{IMG}/case_001_0000.nrrd",
        r"file ending '\.nrrd' differs",
    ),
    ("zero_bytes", "nii", lambda f: (f / C1).write_bytes(b""), C1, r"empty \(0 bytes\)"),
    ("truncated_gz", "nii", lambda f: (f / C1).write_bytes((f / C1).read_bytes()[:600]), C1, r"truncated"),
    ("garbage", "nii", lambda f: (f / C1L).write_bytes(b"not an image" * 50), C1L, r"corrupt"),
    (
        "truncated_mha",
        "mha",
        lambda f: (f / IMG / "case_001_0000.mha").write_bytes((f / IMG / "case_001_0000.mha").read_bytes()[:-300]),
        f"{IMG}/case_001_0000.mha",
        r"corrupt or truncated",
    ),
    ("shape_mismatch", "nii", lambda f: rewrite(f / C1L, lambda a: a[:, :-2], label=True), C1L, r"shape .* differs"),
    ("spacing_mismatch", "nii", lambda f: rewrite(f / C1L, geo_fn=scaled_spacing, label=True), C1L, r"spacing"),
    ("origin_mismatch", "nii", lambda f: rewrite(f / C1L, geo_fn=moved_origin, label=True), C1L, r"origin"),
    ("direction_mismatch", "nii", lambda f: rewrite(f / C1L, geo_fn=rotated, label=True), C1L, r"direction"),
    (
        "channel_spacing_mismatch",
        "nii2ch",
        lambda f: rewrite(f / IMG / "case_001_0001.nii.gz", geo_fn=scaled_spacing),
        f"{IMG}/case_001_0001.nii.gz",
        r"geometry differs from case_001_0000.*spacing",
    ),
    ("nan_in_image", "nii", lambda f: rewrite(f / C1, with_value(np.nan, np.float32)), C1, r"1 NaN and 0 Inf"),
    (
        "nan_in_mha_image",
        "mha",
        lambda f: rewrite(f / IMG / "case_001_0000.mha", with_value(np.nan, np.float32)),
        f"{IMG}/case_001_0000.mha",
        r"1 NaN and 0 Inf",
    ),
    ("inf_in_image", "nii", lambda f: rewrite(f / C1, with_value(np.inf, np.float32)), C1, r"0 NaN and 1 Inf"),
    ("label_undeclared", "nii", lambda f: rewrite(f / C1L, with_value(7), label=True), C1L, r"\[7\] are not declared"),
    (
        "label_negative",
        "nii",
        lambda f: rewrite(f / C1L, with_value(-1, np.int16)),
        C1L,
        r"\[-1\] are not declared",
    ),
    (
        "label_fractional",
        "nii",
        lambda f: rewrite(f / C1L, with_value(0.5, np.float32)),
        C1L,
        r"non-integer values \(e\.g\. 0\.5\)",
    ),
    ("mixed_2d_3d", "nii", lambda f: to_2d(f, "case_001"), C1, r"is 2D while 2 other case\(s\) are 3D"),
    ("image_4d", "nii", lambda f: make_4d(f / C1), C1, r"is a 4D image"),
    (
        "nan_spacing",
        "mha",
        lambda f: mha_header(f / IMG / "case_001_0000.mha", r"ElementSpacing = \S+", "ElementSpacing = nan"),
        f"{IMG}/case_001_0000.mha",
        r"spacing",
    ),
    (
        "singular_direction",
        "mha",
        lambda f: mha_header(
            f / IMG / "case_001_0000.mha", r"TransformMatrix = [^\n]+", "TransformMatrix = 1 0 0 1 0 0 0 0 1"
        ),
        f"{IMG}/case_001_0000.mha",
        r"direction",
    ),
    (
        "gray_file_in_rgb_dataset",
        "rgb",
        lambda f: rewrite(f / IMG / "img1_0000.png", lambda a: a[:1]),
        f"{IMG}/img1_0000.png",
        r"grayscale file but channel_names declares 3 channels \(R, G, B\)",
    ),
    (
        "rgb_file_in_gray_dataset",
        "png",
        lambda f: rewrite(f / IMG / "case_001_0000.png", lambda a: np.stack([a, a, a])),
        f"{IMG}/case_001_0000.png",
        r"3 components per pixel",
    ),
    (
        "rgb_label",
        "png",
        lambda f: rewrite(f / LAB / "case_001.png", lambda a: np.stack([a, a, a])),
        f"{LAB}/case_001.png",
        r"one component per pixel, found 3",
    ),
]


def build(base: str, workspace, synthetic) -> Path:
    if base == "rgb":
        return make_rgb_dataset(workspace.raw)
    return synthetic(**BASES[base])


def assert_reports(rc: int, text: str, folder: Path, rel: str, words: str) -> None:
    assert rc != 0, text
    assert "Traceback" not in text
    target = str(folder / rel)
    lines = [line for line in text.splitlines() if target in line]
    assert lines, f"{target} not named in:\n{text}"
    assert any(re.search(words, line) for line in lines), f"{words!r} not in:\n{text}"


@pytest.mark.parametrize("defect", CORPUS, ids=[c[0] for c in CORPUS])
def test_broken_dataset_cli(defect, workspace, synthetic, capsys):
    _, base, damage, rel, words = defect
    folder = build(base, workspace, synthetic)
    damage(folder)
    rc = main(["verify", "--workspace", str(workspace.root), "-d", "999", "-j", "1"])
    out = capsys.readouterr()
    assert out.out == ""
    assert_reports(rc, out.err, folder, rel, words)
    assert re.search(r"^Dataset999_\w+: \d+ problems? found", out.err, re.M)


@pytest.mark.parametrize("name", ["nan_in_image", "truncated_gz", "json_missing", "gray_file_in_rgb_dataset"])
def test_broken_dataset_subprocess(name, workspace, synthetic):
    _, base, damage, rel, words = next(c for c in CORPUS if c[0] == name)
    folder = build(base, workspace, synthetic)
    damage(folder)
    env = {**os.environ, "AUTOSEG_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "autoseg", "verify", "--workspace", str(workspace.root), "-d", "999", "-j", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert_reports(res.returncode, res.stdout + res.stderr, folder, rel, words)
    assert res.returncode == 1


def test_all_problems_collected_and_deterministic(workspace, synthetic):
    folder = synthetic(**BASES["nii"])
    rewrite(folder / C1, with_value(np.nan, np.float32))
    rewrite(folder / LAB / "case_002.nii.gz", with_value(9), label=True)
    (folder / LAB / "case_000.nii.gz").unlink()
    edit_json(folder, numTraining=4)
    one, two = verify_dataset(folder, jobs=1), verify_dataset(folder, jobs=2)
    assert one == two
    assert len(one.problems) == 4 and list(one.problems) == sorted(one.problems)
    assert [p.split(": ")[0].split("/")[-1] for p in one.problems] == [
        "dataset.json",
        "case_001_0000.nii.gz",
        "case_000.nii.gz",
        "case_002.nii.gz",
    ]


def test_case_files_checked_despite_bad_dataset_json(workspace, synthetic):
    folder = synthetic(**BASES["nii"])
    edit_json(folder, numTraining="three")
    (folder / C1).write_bytes(b"")
    report = verify_dataset(folder, jobs=1)
    assert any("numTraining" in p for p in report.problems)
    assert any(p.startswith(str(folder / C1)) and "empty" in p for p in report.problems)


def test_missing_folder_and_unknown_id(workspace, capsys):
    assert main(["verify", "--folder", str(workspace.raw / "nope")]) == 1
    assert "dataset folder does not exist" in capsys.readouterr().err
    assert main(["verify", "--workspace", str(workspace.root), "-d", "12"]) == 1
    err = capsys.readouterr().err
    assert "no dataset matches '12'" in err and "Traceback" not in err


def test_nifti_truncation_uncompressed(tmp_path):
    path = write_image(tmp_path / "a.nii", np.ones((4, 5, 6), np.float32), Geometry.identity(), compress=False)
    assert scan_nifti(path) == (None, None)
    path.write_bytes(path.read_bytes()[:-10])
    assert "header announces 832 bytes but only 822" in scan_nifti(path)[0]


# ---- valid datasets pass ------------------------------------------------------------------------------------
def test_valid_synthetic_passes(workspace, synthetic, capsys):
    synthetic(**BASES["nii2ch"])
    rc = main(["verify", "--workspace", str(workspace.root), "-d", "999", "-j", "2"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out == "Dataset999_Synthetic: 3 cases, 2 channels, labels 0-2: OK\n"


def test_hippocampus_subset_passes(hippocampus_subset, workspace, capsys):
    folder = hippocampus_subset(10)
    rc = main(["verify", "--folder", str(folder), "-j", "1"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out == "Dataset004_Hippocampus: 10 cases, 1 channel, labels 0-2: OK\n"


def test_png_dataset_passes(workspace, synthetic, capsys):
    synthetic(**BASES["png"])
    assert main(["verify", "--workspace", str(workspace.root), "-d", "Dataset999_Synthetic", "-j", "1"]) == 0
    assert capsys.readouterr().out == "Dataset999_Synthetic: 3 cases, 1 channel, labels 0-2: OK\n"


def test_rgb_dataset_passes(workspace, capsys):
    make_rgb_dataset(workspace.raw)
    assert main(["verify", "--workspace", str(workspace.root), "-d", "999", "-j", "1"]) == 0
    assert capsys.readouterr().out == "Dataset999_RGB: 3 cases, 3 channels, labels 0-1: OK\n"


def test_unused_label_is_a_warning(workspace, synthetic):
    folder = synthetic(**BASES["nii"])
    edit_json(folder, labels={"background": 0, "organ1": 1, "organ2": 2, "organ3": 3})
    report = verify_dataset(folder, jobs=1)
    assert report.ok
    assert report.warnings == (f"{folder / 'dataset.json'}: label 3 is declared but appears in no label file",)
