"""`autoseg predict` on DICOM series: the same label map as from NIfTI, DICOM-SEG output read back with highdicom,
the modality check, and bad DICOM named without a traceback and without writing anything."""

from __future__ import annotations

import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fake_model import make_fake_model

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from dicom_helpers import OBLIQUE_3D, known_volume, orthonormal, write_series  # noqa: E402

from autoseg.cli.main import main  # noqa: E402
from autoseg.data.geometry import Geometry  # noqa: E402
from autoseg.data.image_io import read_label, write_image  # noqa: E402
from autoseg.inference.dicom_inputs import expected_modality  # noqa: E402
from autoseg.workspace import Workspace  # noqa: E402

SHAPE = (6, 20, 18)
GEO = Geometry((2.5, 0.9, 1.1), (-12.5, 30.25, 7.0), orthonormal(OBLIQUE_3D), 3)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Workspace:
    ws = Workspace.at(tmp_path_factory.mktemp("model") / "ws")
    make_fake_model(ws, folds=(0,), n_labels=3, seed=3)
    return ws


def predict(ws: Workspace, inp: Path, out: Path, *extra: str) -> int:
    argv = ["predict", "--workspace", str(ws.root), "-i", str(inp), "-o", str(out), "--device", "cpu"]
    return main([*argv, "--disable-tta", "-j", "1", *extra])


@pytest.fixture(scope="module")
def predicted(model, tmp_path_factory):
    """The same volume as a DICOM series (stored in reverse order, rescaled) and as NIfTI, each predicted."""
    root = tmp_path_factory.mktemp("same")
    volume = known_volume(SHAPE, seed=7, slope=0.25, intercept=-20)
    files = write_series(root / "dicom" / "patient7", volume, GEO, slope=0.25, intercept=-20, reverse=True)
    (root / "nifti").mkdir()
    write_image(root / "nifti" / "patient7_0000.nii.gz", volume, GEO)
    assert predict(model, root / "dicom", root / "out_dicom") == 0
    assert predict(model, root / "nifti", root / "out_nifti") == 0
    assert predict(model, root / "dicom", root / "out_seg", "--output-type", "dicom-seg") == 0
    return root, files


def test_dicom_and_nifti_give_the_same_label_map(predicted):
    root, _ = predicted
    from_dicom, geo_dicom = read_label(root / "out_dicom" / "patient7.nii.gz")
    from_nifti, geo_nifti = read_label(root / "out_nifti" / "patient7.nii.gz")
    assert from_dicom.shape == SHAPE and len(np.unique(from_nifti)) >= 2  # a label map worth comparing
    np.testing.assert_array_equal(from_dicom, from_nifti)
    assert geo_dicom.matches(geo_nifti, rtol=1e-6, atol=1e-6) == [] and geo_dicom.matches(GEO, 1e-6, 1e-6) == []


def test_dicom_seg_reads_back_as_the_label_map_on_the_source_grid(predicted):
    root, files = predicted
    (path,) = sorted((root / "out_seg").iterdir())
    assert path.name == "patient7.dcm"
    expected, _ = read_label(root / "out_nifti" / "patient7.nii.gz")
    seg = hd.seg.segread(path)
    names = {n: seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()}
    present = [int(v) for v in np.unique(expected) if v > 0]
    assert list(names.values()) == [f"organ{v}" for v in present]  # one segment per label present, by name
    sources = [pydicom.dcmread(p) for p in files]  # files[k] holds slice k
    masks = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources], segment_numbers=sorted(names))
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for k, number in enumerate(sorted(names)):
        labels[masks[..., k] > 0] = int(names[number].removeprefix("organ"))
    np.testing.assert_array_equal(labels, expected)
    (ref,) = seg.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == {d.SOPInstanceUID for d in sources}
    for key in ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber",
                "FrameOfReferenceUID"):  # fmt: skip
        assert seg[key].value == sources[0][key].value, key
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert seg.SOPInstanceUID not in {d.SOPInstanceUID for d in sources}


def test_modality_not_the_models_is_refused_unless_forced(model, tmp_path, capsys):
    write_series(tmp_path / "in" / "ct", known_volume((3, 16, 16)), GEO, modality="CT")
    assert predict(model, tmp_path / "in", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "series ct" in err and "modality CT but the model's channel 'MR0' is MR; use --force-modality" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert predict(model, tmp_path / "in", tmp_path / "out", "--force-modality") == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ct.nii.gz"]


def test_statistics_of_skipped_cases_are_read_back_from_the_dicom_seg(model, tmp_path):
    write_series(tmp_path / "in" / "a", known_volume(SHAPE, seed=2), GEO)
    write_series(tmp_path / "in" / "b", known_volume(SHAPE, seed=3), GEO, patient_id="P2")
    # -j 2: the SEG writer travels to an export worker process with its job
    seg_stats = ("--output-type", "dicom-seg", "--statistics")
    assert predict(model, tmp_path / "in", tmp_path / "out", *seg_stats, "-j", "2") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.dcm", "b.dcm", "statistics.csv"]
    fresh = (tmp_path / "out" / "statistics.csv").read_text()
    assert len(fresh.splitlines()) == 1 + 2 * 3  # header + 2 cases x 3 labels
    assert predict(model, tmp_path / "in", tmp_path / "out", *seg_stats, "--continue") == 0
    assert (tmp_path / "out" / "statistics.csv").read_text() == fresh


def test_dicom_seg_output_needs_dicom_input(model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a_0000.nii.gz", known_volume((3, 16, 16)), GEO)
    assert predict(model, tmp_path / "in", tmp_path / "out", "--output-type", "dicom-seg") == 1
    assert "a_0000.nii.gz: --output-type dicom-seg needs DICOM input" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _missing_slice(folder: Path) -> str:
    write_series(folder, known_volume((5, 16, 16)), GEO)[2].unlink()
    return "uneven slice gaps"


def _two_orientations(folder: Path) -> str:
    path = write_series(folder, known_volume((4, 16, 16)), GEO)[1]
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(path)
    return "2 different orientations (ImageOrientationPatient) in one series"


def _non_image(folder: Path) -> str:
    write_series(folder, known_volume((4, 16, 16)), GEO)
    ds = pydicom.dcmread(folder / "img0001.dcm")
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # presentation state
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "state.dcm")
    return f"{folder / 'state.dcm'}: a DICOM object without pixel data"


def _empty(folder: Path) -> str:
    folder.mkdir(parents=True)
    return "no image files found"


def _truncated(folder: Path) -> str:
    path = write_series(folder, known_volume((4, 16, 16)), GEO)[3]
    path.write_bytes(path.read_bytes()[:-100])
    return f"{path}: truncated"


@pytest.mark.parametrize("make", [_missing_slice, _two_orientations, _non_image, _empty, _truncated])
def test_bad_dicom_is_named_without_traceback_and_nothing_is_written(model, tmp_path, capsys, make):
    folder = tmp_path / "in" / "case"
    words = make(folder)
    (tmp_path / "in" / "good").mkdir()
    write_series(tmp_path / "in" / "good", known_volume((3, 16, 16)), GEO) if make is not _empty else None
    assert predict(model, tmp_path / "in" if make is not _empty else folder, tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert words in captured.err, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()


def test_expected_modality_from_channel_names_and_normalisation():
    assert [expected_modality(n) for n in ("CT", "MR0", "T2w", "FLAIR", "t1ce", "PET", "Image")] == [
        "CT", "MR", "MR", "MR", "MR", "PT", None,
    ]  # fmt: skip
    assert expected_modality("noNorm", "ct") == "CT" and expected_modality("signal", "zscore") is None
