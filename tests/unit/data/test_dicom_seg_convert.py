"""DICOM-SEG written with highdicom and read back; `convert_dicom` from series plus DICOM-SEG or NIfTI masks."""

from __future__ import annotations

import json
import logging

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_helpers import OBLIQUE_3D, known_volume, orthonormal, write_enhanced, write_series

from autoseg.cli.main import main
from autoseg.data.dicom.convert import convert_dicom, label_map
from autoseg.data.dicom.pixels import read_series
from autoseg.data.dicom.seg import read_dicom_seg, write_dicom_seg
from autoseg.data.dicom.series import scan_dicom
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, read_label, write_label
from autoseg.errors import DatasetError

GEO = Geometry((2.0, 0.8, 0.6), (5.0, -3.5, 12.25), orthonormal(OBLIQUE_3D), 3)
NAMES = {1: "liver", 2: "tumour", 3: "cyst"}
LABELS = {"background": 0, "liver": 1, "tumour": 2, "cyst": 3}


def blobs(shape, values=(1, 3)) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    out[1:3, 2:6, 1:5] = values[0]
    if len(values) > 1:
        out[-1, -3:, -2:] = values[1]
    return out


def test_seg_leaves_empty_labels_out_and_reads_back_voxel_for_voxel(tmp_path, autoseg_log):
    write_series(tmp_path / "s", known_volume((4, 9, 7)), GEO, reverse=True)
    series = scan_dicom(tmp_path / "s").series[0]
    labels = blobs(series.shape)
    with autoseg_log.at_level(logging.INFO, logger="autoseg"):
        path = write_dicom_seg(tmp_path / "out" / "s.dcm", labels, GEO, series=series, names=NAMES)
    assert "label(s) without a voxel left out of the DICOM-SEG: tumour" in autoseg_log.text
    seg = hd.seg.segread(path)
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == ["liver", "cyst"]
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    np.testing.assert_array_equal(read_dicom_seg(path, series, LABELS), labels)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s.dcm"]  # no temporary file left


def test_seg_of_an_empty_label_map_keeps_every_label_as_an_empty_segment(tmp_path):
    write_series(tmp_path / "s", known_volume((3, 5, 5)), GEO)
    series = scan_dicom(tmp_path / "s").series[0]
    path = write_dicom_seg(tmp_path / "e.dcm", np.zeros(series.shape, np.uint8), GEO, series=series, names=NAMES)
    seg = hd.seg.segread(path)
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == list(NAMES.values())
    assert read_dicom_seg(path, series, LABELS).max() == 0


def test_seg_on_a_multiframe_source_references_its_frames(tmp_path):
    files = write_series(tmp_path / "single", known_volume((5, 6, 7)), GEO, reverse=True)
    enhanced = pydicom.dcmread(write_enhanced(tmp_path / "multi", files))
    series = scan_dicom(tmp_path / "multi").series[0]
    labels = blobs(series.shape, (2,))
    path = write_dicom_seg(tmp_path / "m.dcm", labels, GEO, series=series, names=NAMES)
    seg = hd.seg.segread(path)
    masks = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=enhanced.SOPInstanceUID,
        source_frame_numbers=[s.frame + 1 for s in series.slices],
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal((masks[..., 0] > 0) * 2, labels)


def test_seg_with_an_unknown_segment_name_is_refused(tmp_path):
    write_series(tmp_path / "s", known_volume((3, 5, 5)), GEO)
    series = scan_dicom(tmp_path / "s").series[0]
    path = write_dicom_seg(tmp_path / "x.dcm", blobs(series.shape), GEO, series=series, names={1: "spleen", 3: "cyst"})
    with pytest.raises(DatasetError, match=r"x.dcm: segment\(s\) 'spleen' are not among the labels liver, tumour"):
        read_dicom_seg(path, series, LABELS)


def _dataset_sources(root):
    """Three series: one with a DICOM-SEG beside it, one with a NIfTI mask, one without a mask."""
    vol_a, vol_b, vol_c = (known_volume((4, 9, 7), seed=s, slope=0.5, intercept=10) for s in (1, 2, 3))
    write_series(root / "in" / "alice", vol_a, GEO, modality="CT", slope=0.5, intercept=10, patient_id="A")
    write_series(root / "in" / "bob", vol_b, GEO, modality="CT", slope=0.5, intercept=10, patient_id="B")
    write_series(root / "in" / "carol", vol_c, GEO, modality="CT", slope=0.5, intercept=10, patient_id="C")
    scan = scan_dicom(root / "in")
    alice, bob, _ = scan.series
    seg_a, mask_b = blobs(alice.shape, (1, 2)), blobs(bob.shape, (3,))
    write_dicom_seg(root / "in" / "alice_seg.dcm", seg_a, GEO, series=alice, names=NAMES)
    write_label(root / "in" / "masks" / "bob.nii.gz", mask_b, GEO)
    return {"alice": (vol_a, seg_a), "bob": (vol_b, mask_b), "carol": (vol_c, None)}


def test_convert_dicom_writes_a_raw_dataset_that_verifies(tmp_path, capsys):
    expected = _dataset_sources(tmp_path)
    ws = tmp_path / "ws"
    argv = ["convert_dicom", "--workspace", str(ws), "-i", str(tmp_path / "in"), "-d", "502"]
    assert main([*argv, "--labels", "liver", "tumour", "cyst", "--name", "LiverCT"]) == 0
    folder = ws / "raw" / "Dataset502_LiverCT"
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "CT"} and spec["labels"] == LABELS and spec["numTraining"] == 2
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["alice_0000.nii.gz", "bob_0000.nii.gz"]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["carol_0000.nii.gz"]
    for cid, (vol, mask) in expected.items():
        image, geo = read_file(folder / ("imagesTs" if mask is None else "imagesTr") / f"{cid}_0000.nii.gz")
        np.testing.assert_array_equal(image[0], vol)
        assert geo.matches(GEO, 1e-6, 1e-6) == []
        if mask is not None:
            labels, lgeo = read_label(folder / "labelsTr" / f"{cid}.nii.gz")
            np.testing.assert_array_equal(labels, mask)
            assert lgeo.matches(GEO, 1e-6, 1e-6) == []
    capsys.readouterr()
    assert main(["verify", "--workspace", str(ws), "-d", "502", "-j", "1"]) == 0, capsys.readouterr().err


def test_convert_dicom_names_every_mask_problem_and_writes_nothing(tmp_path):
    _dataset_sources(tmp_path)
    inp = tmp_path / "in"
    bob = next(s for s in scan_dicom(inp).series if s.case_id == "bob")
    shifted = Geometry(GEO.spacing, (6.0, -3.5, 12.25), GEO.direction, 3)
    write_label(inp / "masks" / "bob.nii.gz", blobs(bob.shape), shifted)  # off the grid
    write_label(inp / "masks" / "carol.nii.gz", blobs(bob.shape, (7,)), GEO)  # a value without a label
    write_label(inp / "masks" / "dave.nii.gz", blobs(bob.shape), GEO)  # no such series
    with pytest.raises(DatasetError) as info:
        convert_dicom(inp, tmp_path / "raw", 7, ["liver", "cyst"])
    text = str(info.value)
    assert text.splitlines()[0] == "4 input problems:"
    assert "alice_seg.dcm: segment(s) 'tumour' are not among the labels liver, cyst" in text
    assert "bob.nii.gz: not on the grid of series bob" in text and "origin (6, -3.5, 12.25) vs (5, " in text
    assert "carol.nii.gz: label value(s) [7] are not among the labels" in text
    assert "dave.nii.gz: a NIfTI mask must be named after its series' case id or SeriesInstanceUID" in text
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_convert_dicom_refuses_mixed_modalities_and_bad_labels(tmp_path):
    write_series(tmp_path / "in" / "a", known_volume((3, 5, 5)), GEO, modality="CT")
    write_series(tmp_path / "in" / "b", known_volume((3, 5, 5)), GEO, modality="MR")
    with pytest.raises(DatasetError, match=r"series of 2 modalities \(CT: a; MR: b\)"):
        convert_dicom(tmp_path / "in", tmp_path / "raw", 9, ["liver"])
    with pytest.raises(DatasetError, match="'Liver' is given twice"):
        label_map(["liver", "Liver"])


def test_series_read_matches_the_converted_image(tmp_path):
    """The converted image is `read_series` written as NIfTI: the same reader as `autoseg predict`."""
    _dataset_sources(tmp_path)
    target = convert_dicom(tmp_path / "in", tmp_path / "raw", 3, ["liver", "tumour", "cyst"])
    series = next(s for s in scan_dicom(tmp_path / "in").series if s.case_id == "alice")
    arr, _ = read_series(series)
    np.testing.assert_array_equal(read_file(target / "imagesTr" / "alice_0000.nii.gz")[0], arr)
