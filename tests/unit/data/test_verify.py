"""`autoseg verify`: a corpus of broken datasets (one defect each) run through the real CLI, and valid datasets."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))
from hostile_corpus import C1, CASES, IMG, LAB, edit_json, rewrite, scaled, with_value  # noqa: E402

from autoseg.cli.main import main  # noqa: E402
from autoseg.data.geometry import Geometry  # noqa: E402
from autoseg.data.image_io import write_image, write_label  # noqa: E402
from autoseg.data.nifti import scan_nifti  # noqa: E402
from autoseg.data.verify import verify_dataset  # noqa: E402

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


# defects of the hostile-input corpus (tests/unit/reliability/hostile_corpus.py) that verify reports in its words
FROM_HOSTILE = """
    json_missing json_not_json json_not_object json_key_missing num_training_str labels_not_int lossy_ending
    channel_missing label_missing label_unmatched mismatched_ending zero_bytes_image truncated_gz_image garbage_label
    truncated_mha shape_mismatch spacing_mismatch origin_mismatch direction_mismatch nan_in_image nan_in_mha
    inf_in_image label_undeclared label_negative label_float_fraction mixed_2d_3d image_4d nan_spacing_mha
    singular_direction_mha
""".split()
HOSTILE = {c[0]: c for c in CASES}

# (id, base, defect(folder), offending path (relative to the dataset folder), regex of defect words)
CORPUS = [HOSTILE[name] for name in FROM_HOSTILE] + [
    ("channel_names_list", "nii", lambda f: edit_json(f, channel_names=["CT"]), "dataset.json", r"channel_names"),
    (
        "labels_not_consecutive",
        "nii",
        lambda f: edit_json(f, labels={"background": 0, "organ1": 1, "organ2": 3}),
        "dataset.json",
        r"consecutive",
    ),
    ("count_mismatch", "nii", lambda f: edit_json(f, numTraining=5), "dataset.json", r"numTraining is 5 but 3 cases"),
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
        "channel_spacing_mismatch",
        "nii2ch",
        lambda f: rewrite(f / IMG / "case_001_0001.nii.gz", geo_fn=scaled),
        f"{IMG}/case_001_0001.nii.gz",
        r"geometry differs from case_001_0000.*spacing",
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


@pytest.mark.parametrize("name", ["nan_in_image", "truncated_gz_image", "json_missing", "gray_file_in_rgb_dataset"])
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
