"""`autoseg predict` checks every input before any work and names every bad file in one error (`input_problems`)."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import numpy as np
import pytest
from fake_model import make_fake_model, tiny_configuration, write_case

from autoseg.cli.main import main
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, write_image
from autoseg.errors import DatasetError
from autoseg.inference.inputs import InputCase, input_problems, list_inputs, scan_inputs
from autoseg.inference.predictor import Predictor, predict_folder
from autoseg.inference.source import resolve_source
from autoseg.workspace import Workspace

SHAPE, SPACING = (4, 10, 10), (2.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Workspace]:
    """Tiny random-weight models (one fold each): a one-channel and a two-channel one."""
    one = Workspace.at(tmp_path_factory.mktemp("m1") / "ws")
    make_fake_model(one, folds=(0,))
    two = Workspace.at(tmp_path_factory.mktemp("m2") / "ws")
    make_fake_model(two, configurations=[tiny_configuration(channels=2)], folds=(0,), channels=2)
    return {1: one, 2: two}


def _broken_folder(inp: Path) -> dict[str, str]:
    """A good case and three bad ones (empty, truncated .nii.gz, two components for a one-channel model);
    returns {bad file name: words its problem line must hold}."""
    for i, cid in enumerate(("empty", "good", "truncated", "vector")):
        write_case(inp, cid, SHAPE, SPACING, seed=i)
    (inp / "empty_0000.nii.gz").write_bytes(b"")
    data = (inp / "truncated_0000.nii.gz").read_bytes()
    (inp / "truncated_0000.nii.gz").write_bytes(data[:-60])
    arr, geo = read_file(inp / "vector_0000.nii.gz")
    write_image(inp / "vector_0000.nii.gz", np.concatenate([arr, arr]), geo)  # 2 components per pixel
    return {
        "empty_0000.nii.gz": r"file is empty \(0 bytes\)",
        "truncated_0000.nii.gz": r"truncated",
        "vector_0000.nii.gz": r"the image has 2 channel\(s\) \(2 component\(s\) per pixel\), the model expects 1",
    }


def _problem_lines(text: str, bad: dict[str, str]) -> None:
    for name, words in bad.items():
        lines = [line for line in text.splitlines() if name in line]
        assert len(lines) == 1, f"{name} not named once in:\n{text}"
        assert re.search(words, lines[0]), f"{words!r} not in {lines[0]!r}"


def test_predict_names_every_bad_input_at_once_and_writes_nothing(models, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    bad = _broken_folder(inp)
    argv = ["predict", "--workspace", str(models[1].root), "-i", str(inp), "-o", str(out), "--device", "cpu"]
    rc = main(argv + ["--disable-tta"])
    captured = capsys.readouterr()
    assert rc != 0
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert "3 input problems:" in captured.err
    _problem_lines(captured.err, bad)
    assert "good_0000" not in captured.err
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    assert sorted(p.name for p in inp.iterdir()) == sorted(
        f"{c}_0000.nii.gz" for c in ("empty", "good", "truncated", "vector")
    )
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob(".*"))  # no temporary file anywhere


def test_predict_folder_raises_one_error_before_creating_the_output(models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    bad = _broken_folder(inp)
    predictor = Predictor(resolve_source(models[1], 991), "3d_fullres", [0], "cpu", tta=False)
    with pytest.raises(DatasetError) as info:
        predict_folder([predictor], inp, out)
    text = str(info.value)
    assert text.splitlines()[0] == "3 input problems:"
    _problem_lines(text, bad)
    assert not out.exists()
    (inp / "empty_0000.nii.gz").unlink()
    (inp / "truncated_0000.nii.gz").unlink()
    (inp / "vector_0000.nii.gz").unlink()
    assert [p.name for p in predict_folder([predictor], inp, out)] == ["good.nii.gz"]  # the good case alone works


def test_naming_and_file_problems_are_named_together(models, tmp_path):
    """A missing channel file (name problem) and a broken file of another case appear in the same error."""
    inp = tmp_path / "in"
    write_case(inp, "a", SHAPE, SPACING, channels=2)
    write_case(inp, "b", SHAPE, SPACING, channels=1)  # b_0001 missing
    (inp / "a_0001.nii.gz").write_bytes(b"")
    predictor = Predictor(resolve_source(models[2], 991), "3d_fullres", [0], "cpu", tta=False)
    with pytest.raises(DatasetError) as info:
        predict_folder([predictor], inp, tmp_path / "out")
    text = str(info.value)
    assert text.startswith("2 input problems:\n")
    assert f"case 'b': channel file {inp / 'b_0001.nii.gz'} is missing" in text
    assert f"{inp / 'a_0001.nii.gz'}: file is empty (0 bytes)" in text
    assert "channel(s)" not in text  # the incomplete case b is not also blamed for its channel count
    assert not (tmp_path / "out").exists()


def test_channel_geometry_and_shape_mismatch_within_a_case(models, tmp_path):
    inp = tmp_path / "in"
    geo = write_case(inp, "a", SHAPE, SPACING, channels=2)
    write_case(inp, "b", SHAPE, SPACING, channels=2)
    write_image(inp / "a_0001.nii.gz", np.zeros(SHAPE, np.float32), Geometry.identity((1.0, 1.0, 1.0)))
    write_image(inp / "b_0001.nii.gz", np.zeros((4, 10, 9), np.float32), geo)
    cases, naming = scan_inputs(inp, resolve_source(models[2], 991))
    assert naming == []
    problems = input_problems(cases, 2)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{inp / 'a_0001.nii.gz'}: geometry differs from a_0000.nii.gz: spacing")
    assert problems[1] == f"{inp / 'b_0001.nii.gz'}: shape (4, 10, 9) differs from b_0000.nii.gz (4, 10, 10)"


def test_vector_file_in_a_multi_file_case_is_named(tmp_path):
    geo = write_case(tmp_path, "a", SHAPE, SPACING, channels=2)
    write_image(tmp_path / "a_0001.nii.gz", np.zeros((3, *SHAPE), np.float32), geo)
    case = InputCase("a", (tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"), ".nii.gz")
    assert input_problems([case], 2) == [
        f"{tmp_path / 'a_0001.nii.gz'}: has 3 component(s) per pixel, so case 'a' has 4 channel(s) in 2 files; "
        "the model expects 2"
    ]


def test_corrupt_4d_and_nonfinite_inputs_each_get_a_line(tmp_path):
    write_case(tmp_path, "g", SHAPE, SPACING)
    write_case(tmp_path, "n", SHAPE, SPACING)
    (tmp_path / "c_0000.nii.gz").write_bytes(b"\x1f\x8b" + b"junk" * 100)
    arr, geo = read_file(tmp_path / "n_0000.nii.gz")
    arr[0, 1, 2, 3] = np.nan
    write_image(tmp_path / "n_0000.nii.gz", arr, geo)
    cases = [InputCase(c, (tmp_path / f"{c}_0000.nii.gz",), ".nii.gz") for c in ("c", "g", "n")]
    problems = input_problems(cases, 1)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{tmp_path / 'c_0000.nii.gz'}: cannot be read as an image")
    assert problems[1].startswith(f"{tmp_path / 'n_0000.nii.gz'}: contains 1 NaN")


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    """A file the user may not read (simulated: the tests may run as root, who reads every file)."""
    write_case(tmp_path, "u", SHAPE, SPACING)
    path = tmp_path / "u_0000.nii.gz"
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    assert input_problems([InputCase("u", (path,), ".nii.gz")], 1) == [f"{path}: cannot be opened (permission denied)"]


def test_list_inputs_names_every_naming_problem(models, tmp_path):
    inp = tmp_path / "in"
    for i in range(12):
        write_case(inp, f"c{i:02d}", SHAPE, SPACING, channels=1)  # a two-channel model: every _0001 is missing
    with pytest.raises(DatasetError) as info:
        list_inputs(inp, resolve_source(models[2], 991))
    lines = str(info.value).splitlines()
    assert lines[0] == "12 input problems:" and len(lines) == 13
    assert all(f"case 'c{i:02d}': channel file" in lines[i + 1] for i in range(12))


def test_part_checks_only_its_own_share(models, tmp_path):
    inp = tmp_path / "in"
    for i, cid in enumerate(("a", "b", "c")):
        write_case(inp, cid, SHAPE, SPACING, seed=i)
    (inp / "b_0000.nii.gz").write_bytes(b"")
    predictor = Predictor(resolve_source(models[1], 991), "3d_fullres", [0], "cpu", tta=False)
    out = tmp_path / "out"
    assert [p.name for p in predict_folder([predictor], inp, out, part=(1, 2))] == ["a.nii.gz", "c.nii.gz"]
    with pytest.raises(DatasetError, match=r"1 input problem:\n  .*b_0000.nii.gz: file is empty"):
        predict_folder([predictor], inp, out, part=(2, 2))
