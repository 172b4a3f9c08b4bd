"""Image formats as a registry keyed by file ending: a format of the test's own (".npyimg": one NumPy .npz file
holding the array and its geometry, registered like a plugin's) goes through the real pipeline, fingerprint -> plan
-> preprocess -> train -> predict, and comes out in that format with the input's geometry. Also: the errors of
unknown and duplicate endings and of a failing reader or writer. Every test removes what it registers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import autoseg.data.image_io as image_io
import autoseg.registry as registry
from autoseg.data.dataset import is_rgb, parse_dataset_json
from autoseg.data.formats import ImageFormat, formats, register_format, unregister_format
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import (
    check_ending,
    file_ending,
    is_natural_2d,
    read_file,
    read_header,
    read_label,
    supported_endings,
    write_image,
    write_label,
)
from autoseg.data.synthetic import make_synthetic_dataset, oblique_direction
from autoseg.errors import ConfigError, ImageIOError
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.inference.predictor import run_predict
from autoseg.preprocessing.pipeline import plan_and_preprocess
from autoseg.training.run import train_folds

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from tiny_run import quick_settings  # noqa: E402 - the trainer tests' short CPU run

NPYIMG = ".npyimg"


def read_npyimg(path: Path) -> tuple[np.ndarray, Geometry]:
    with np.load(path) as data:
        arr = data["array"]
        geo = Geometry(
            tuple(data["spacing"].tolist()),
            tuple(data["origin"].tolist()),
            tuple(data["direction"].tolist()),
            int(data["dim"]),
        )
    return (arr if arr.ndim == 4 else arr[None]), geo


def write_npyimg(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
        np.savez(
            fh,
            array=array,
            spacing=np.asarray(geometry.spacing),
            origin=np.asarray(geometry.origin),
            direction=np.asarray(geometry.direction),
            dim=geometry.dim,
        )


def _fail_write(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    path.write_bytes(b"half a file")
    raise ValueError("cannot encode int64")


@pytest.fixture
def npyimg() -> Iterator[ImageFormat]:
    fmt = register_format(ImageFormat("NumPy image", (NPYIMG,), read=read_npyimg, write=write_npyimg))
    yield fmt
    if NPYIMG in formats:  # a test may have swapped in another format for the ending
        formats.unregister(NPYIMG)


# ---- end to end ---------------------------------------------------------------------------------------------------
def test_user_format_through_the_whole_pipeline(npyimg, workspace, tmp_path):
    folder = make_synthetic_dataset(workspace.raw, n_cases=5, n_test=2, shape=(8, 16, 16), file_ending=NPYIMG)
    labels_tr = sorted((folder / "labelsTr").iterdir())
    assert [p.name for p in labels_tr][:1] == [f"case_000{NPYIMG}"]
    assert read_npyimg(labels_tr[0])[0].dtype == np.uint8  # written by the format's own writer

    report = plan_and_preprocess(workspace, "999", ["3d_fullres"], jobs=1)
    assert DatasetFingerprint.load(report.fingerprint_file).file_ending == NPYIMG
    gt = sorted(p.name for p in workspace.gt_folder(report.dataset).iterdir())
    assert gt == [p.name for p in labels_tr]  # ground truth copied in the dataset's format

    (fold,) = train_folds(
        workspace, "999", ["3d_fullres"], folds=[0], overrides=quick_settings(1, 2), device="cpu", num_workers=0
    )
    assert fold.final_checkpoint.is_file()

    out = tmp_path / "predictions"
    inputs = sorted((folder / "imagesTs").iterdir())
    written = run_predict(
        workspace, folder / "imagesTs", out, dataset="999", configuration="3d_fullres", folds=[0], device="cpu",
        tta=False, workers=1,
    )  # fmt: skip
    assert sorted(p.name for p in written) == ["case_005" + NPYIMG, "case_006" + NPYIMG]
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(NPYIMG)) == sorted(p.name for p in written)
    oblique = 0
    for img in inputs:
        pred, pred_geo = read_npyimg(out / img.name.replace("_0000", ""))  # read back by the format itself
        ref, ref_geo = read_npyimg(img)
        assert pred.shape == ref.shape
        assert pred_geo == ref_geo  # spacing, origin, direction and dimension, exactly
        assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1, 2}
        oblique += not np.allclose(ref_geo.direction, np.eye(3).ravel())
    assert oblique == 1  # case_005 has an oblique direction


# ---- the registry -------------------------------------------------------------------------------------------------
def test_a_registered_format_is_known_everywhere(npyimg, tmp_path):
    assert NPYIMG in supported_endings()
    assert file_ending(tmp_path / f"A_0000{NPYIMG.upper()}") == NPYIMG
    check_ending(NPYIMG)
    assert not is_natural_2d(NPYIMG) and is_natural_2d(".png") and is_natural_2d(".tiff")
    assert not is_rgb(NPYIMG, ["R", "G", "B"]) and is_rgb(".png", ["R", "G", "B"])
    geo = Geometry((2.0, 0.5, 0.75), (1.0, -2.0, 3.5), oblique_direction(0.3))
    lab = np.random.default_rng(0).integers(0, 3, (3, 4, 5))
    write_label(tmp_path / f"l{NPYIMG}", lab, geo)
    assert [p.name for p in tmp_path.iterdir()] == [f"l{NPYIMG}"]  # the temporary name was renamed
    back, back_geo = read_label(tmp_path / f"l{NPYIMG}")
    np.testing.assert_array_equal(back, lab)
    assert back_geo == geo
    assert read_header(tmp_path / f"l{NPYIMG}") == ((3, 4, 5), 1, geo)  # no header reader: read whole


def test_unknown_ending_lists_the_registered_ones(npyimg, tmp_path):
    with pytest.raises(ImageIOError) as exc:
        read_file(tmp_path / "scan.xyz")
    text = str(exc.value)
    assert text.startswith(f"{tmp_path / 'scan.xyz'}: '.xyz' is not supported (supported: ")
    assert all(e in text for e in (".nii.gz", ".png", ".mha", NPYIMG)) and "--plugin" in text
    with pytest.raises(ImageIOError, match=r"x\.xyz: '\.xyz' is not supported"):
        write_image(tmp_path / "x.xyz", np.zeros((2, 2, 2)), Geometry.identity())
    (tmp_path / "dataset.json").write_text(
        '{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "numTraining": 1, "file_ending": ".xyz"}'
    )
    spec, problems = parse_dataset_json(tmp_path)
    assert spec is None and "'.xyz' is not supported (supported: .bmp," in problems[0] and NPYIMG in problems[0]


def test_unregistered_format_is_unknown_again(tmp_path):
    fmt = register_format(ImageFormat("Temporary", (".tmpimg", ".tmpimg2"), read=read_npyimg, write=write_npyimg))
    try:
        check_ending(".tmpimg2")
    finally:
        unregister_format(fmt)
    assert ".tmpimg" not in supported_endings() and ".tmpimg2" not in supported_endings()
    with pytest.raises(ImageIOError, match=r"'\.tmpimg' is not supported"):
        check_ending(".tmpimg")


def test_duplicate_ending_is_an_error(npyimg):
    other = ImageFormat("Other", (NPYIMG,), read=read_npyimg, write=write_npyimg)
    with pytest.raises(ConfigError, match=r"ending '\.npyimg' is already registered by 'NumPy image'"):
        register_format(other)
    with pytest.raises(ValueError, match=r"'\.npyimg' is already registered"):
        formats.register(NPYIMG, other)
    both = ImageFormat("Half new", (".halfnew", ".nii.gz"), read=read_npyimg, write=write_npyimg)
    with pytest.raises(ConfigError, match=r"'\.nii\.gz' is already registered by 'NIfTI'"):
        register_format(both)
    assert ".halfnew" not in formats  # nothing of a refused format is registered
    assert register_format(npyimg) is npyimg  # the same format again is no duplicate
    assert formats.get(NPYIMG) is npyimg


@pytest.mark.parametrize("ending", ["npy", ".NPY", "."])
def test_ending_must_be_a_lower_case_suffix(ending):
    with pytest.raises(ConfigError, match="must be a lower-case file ending starting with '.'"):
        register_format(ImageFormat("Bad", (ending,), read=read_npyimg, write=write_npyimg))


def test_reader_and_writer_errors_name_the_file_and_keep_the_cause(npyimg, tmp_path):
    bad = tmp_path / f"bad{NPYIMG}"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(ImageIOError, match=r"bad\.npyimg: cannot be read as NumPy image \(") as exc:
        read_file(bad)
    assert exc.value.__cause__ is not None
    with pytest.raises(ImageIOError, match=r"missing\.npyimg: file not found"):
        read_header(tmp_path / f"missing{NPYIMG}")
    formats.unregister(NPYIMG)
    register_format(ImageFormat("Failing", (NPYIMG,), read=read_npyimg, write=_fail_write))
    out = tmp_path / "out"
    with pytest.raises(ImageIOError, match=r"out/x\.npyimg: cannot be written as Failing \(cannot encode") as exc:
        write_image(out / f"x{NPYIMG}", np.zeros((2, 3, 4)), Geometry.identity())
    assert isinstance(exc.value.__cause__, ValueError)
    assert list(out.iterdir()) == []  # the temporary file is removed


def test_a_reader_returning_nonsense_is_refused(tmp_path):
    flat = ImageFormat(
        "Flat", (".flatimg",), read=lambda p: (np.zeros((4, 5)), Geometry.identity()), write=write_npyimg
    )
    register_format(flat)
    try:
        (tmp_path / "a.flatimg").write_bytes(b"x")
        with pytest.raises(ImageIOError, match=r"a\.flatimg: the Flat reader returned shape \(4, 5\); expected"):
            read_file(tmp_path / "a.flatimg")
    finally:
        unregister_format(flat)


def test_plugin_in_autoseg_plugins_is_imported_on_first_use(tmp_path, monkeypatch):
    """Worker processes (verify, fingerprint, preprocess, export) do not run the CLI that imports plugins: the
    modules named in AUTOSEG_PLUGINS are imported on the first look at the registry."""
    (tmp_path / "envimg_plugin.py").write_text(
        "from autoseg.data.formats import ImageFormat, register_format\n"
        "register_format(ImageFormat('Env', ('.envimg',), read=print, write=print))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AUTOSEG_PLUGINS", "envimg_plugin")
    monkeypatch.setattr(image_io, "_env_plugins_imported", False)
    monkeypatch.setattr(registry, "_imported", [])  # plans record imported plugins: leave no trace for others
    monkeypatch.delitem(sys.modules, "envimg_plugin", raising=False)
    try:
        check_ending(".envimg")
    finally:
        if ".envimg" in formats:
            formats.unregister(".envimg")
        sys.modules.pop("envimg_plugin", None)
