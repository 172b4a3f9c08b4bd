"""DICOM series reading: series written with pydicom from known volumes read back with the same array and geometry;
bad series are named."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_helpers import OBLIQUE_3D, compress_files, known_volume, orthonormal, write_enhanced, write_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from autoseg.data.dicom.pixels import read_series
from autoseg.data.dicom.series import scan_dicom
from autoseg.data.geometry import Geometry
from autoseg.errors import ImageIOError

OBLIQUE = orthonormal(OBLIQUE_3D)


def geometry(spacing=(3.0, 0.7, 0.9), direction=OBLIQUE, origin=(10.5, -20.25, 33.0)) -> Geometry:
    return Geometry(tuple(spacing), tuple(origin), tuple(direction), 3)


def assert_same(series, volume, geo):
    arr, g = read_series(series)
    assert arr.shape == (1, *volume.shape) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[0], volume)
    np.testing.assert_allclose(g.spacing, geo.spacing, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(g.origin, geo.origin, atol=1e-9)
    np.testing.assert_allclose(g.direction, geo.direction, atol=1e-6)
    assert g.dim == 3


def test_oblique_anisotropic_reversed_rescaled_series_reads_back_exactly(tmp_path):
    geo = geometry()
    vol = known_volume((6, 7, 9), slope=2.5, intercept=-100.0)
    write_series(tmp_path / "s", vol, geo, slope=2.5, intercept=-100.0, reverse=True)
    scan = scan_dicom(tmp_path)
    assert scan.problems == () and len(scan.series) == 1
    series = scan.series[0]
    assert series.case_id == "s" and series.modality == "MR" and series.shape == (6, 7, 9)
    # stored in reverse order: the first file by name is the last slice
    assert series.slices[0].path.name == "img0006.dcm"
    assert_same(series, vol, geo)


def test_same_grid_as_simpleitk_gdcm_series_reader(tmp_path):
    geo = geometry(spacing=(2.0, 0.5, 0.8))
    vol = known_volume((5, 6, 8), seed=3)
    write_series(tmp_path, vol, geo, reverse=True)
    series = scan_dicom(tmp_path).series[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    arr, g = read_series(series)
    np.testing.assert_array_equal(arr[0], sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(g.itk_spacing, image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(g.origin, image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(g.direction, image.GetDirection(), atol=1e-6)


def test_two_series_in_one_folder_are_two_cases(tmp_path):
    geo_a, geo_b = geometry(), geometry(spacing=(1.5, 1.0, 1.0), direction=tuple(np.eye(3).ravel()))
    vol_a, vol_b = known_volume((4, 5, 6), seed=1), known_volume((7, 5, 3), seed=2, slope=0.5, intercept=3)
    write_series(tmp_path, vol_a, geo_a, series_number=3, prefix="a")
    write_series(tmp_path, vol_b, geo_b, modality="CT", series_number=4, slope=0.5, intercept=3, prefix="b")
    scan = scan_dicom(tmp_path)
    assert scan.problems == ()
    assert [s.case_id for s in scan.series] == ["P1_S3", "P1_S4"]
    assert [s.modality for s in scan.series] == ["MR", "CT"]
    assert_same(scan.series[0], vol_a, geo_a)
    assert_same(scan.series[1], vol_b, geo_b)


def test_localizer_images_are_skipped(tmp_path, autoseg_log):
    vol = known_volume((4, 6, 6))
    write_series(tmp_path, vol, geometry())
    scouts = write_series(tmp_path, known_volume((3, 6, 6)), geometry(), prefix="scout", series_number=1)
    for k, path in enumerate(scouts):  # three orthogonal planes in one series, as scanners store them
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [[1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1]][k]
        ds.save_as(path)
    with autoseg_log.at_level(logging.INFO, logger="autoseg"):
        scan = scan_dicom(tmp_path)
    assert scan.problems == () and [s.shape for s in scan.series] == [(4, 6, 6)]
    assert "3 localizer image(s) skipped (ImageType LOCALIZER)" in autoseg_log.text


def test_multiframe_enhanced_image_reads_like_its_single_frame_source(tmp_path):
    geo = geometry()
    vol = known_volume((5, 6, 7), seed=4, slope=2.0, intercept=-10)
    files = write_series(tmp_path / "single", vol, geo, slope=2.0, intercept=-10, reverse=True)
    write_enhanced(tmp_path / "multi", files)
    series = scan_dicom(tmp_path / "multi").series[0]
    assert len(series.files) == 1 and series.shape == (5, 6, 7)
    assert_same(series, vol, geo)


@pytest.mark.parametrize(
    "syntax",
    [pydicom.uid.RLELossless, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless, pydicom.uid.JPEGLosslessSV1],
)
def test_compressed_transfer_syntaxes(tmp_path, syntax):
    """RLE (pydicom), JPEG-LS (pyjpegls), JPEG 2000 (Pillow) and JPEG lossless process 14, which no installed pydicom
    plugin decodes and SimpleITK's GDCM reads instead (it applies the rescale itself); both readers."""
    geo = geometry()
    vol = known_volume((3, 16, 16), seed=5, slope=2.0, intercept=-50)
    files = write_series(tmp_path / "s", vol, geo, slope=2.0, intercept=-50)
    compress_files(files, syntax, tmp_path)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    series = scan_dicom(tmp_path / "s").series[0]
    assert_same(series, vol, geo)  # "auto": GDCM's series reader
    np.testing.assert_array_equal(read_series(series, "pydicom")[0][0], vol)  # pydicom's plugins, else GDCM per file


# ---- bad series ---------------------------------------------------------------------------------------------------
def test_missing_slice_is_named(tmp_path):
    files = write_series(tmp_path, known_volume((6, 4, 4)), geometry())
    files[3].unlink()
    scan = scan_dicom(tmp_path)
    assert scan.series == ()
    (problem,) = scan.problems
    assert "uneven slice gaps: 6 mm between img0003.dcm and img0005.dcm" in problem
    assert "about 1 slice(s) missing" in problem and "SeriesInstanceUID" in problem


def test_two_orientations_in_one_series_are_named(tmp_path):
    files = write_series(tmp_path, known_volume((4, 4, 4)), geometry())
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(files[2])
    (problem,) = scan_dicom(tmp_path).problems
    assert "2 different orientations (ImageOrientationPatient) in one series" in problem and "img0003.dcm" in problem


def test_repeated_position_and_other_sizes_are_named(tmp_path):
    files = write_series(tmp_path / "a", known_volume((4, 4, 4)), geometry())
    ds = pydicom.dcmread(files[1])
    ds.ImagePositionPatient = pydicom.dcmread(files[0]).ImagePositionPatient
    ds.save_as(files[1])
    files = write_series(tmp_path / "b", known_volume((3, 4, 4)), geometry())
    ds = pydicom.dcmread(files[1])
    ds.Rows, ds.PixelData = 2, ds.PixelData[: 2 * 4 * 2]
    ds.save_as(files[1])
    problems = "\n".join(scan_dicom(tmp_path).problems)
    assert "two slices at the same position" in problems and "img0001.dcm and img0002.dcm" in problems
    assert "2 different image sizes (Rows, Columns) in one series" in problems


def test_non_image_truncated_and_broken_files_are_named(tmp_path):
    write_series(tmp_path, known_volume((3, 8, 8)), geometry())
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.Modality, sr.SeriesInstanceUID = "SR", generate_uid()
    sr.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    data = (tmp_path / "img0002.dcm").read_bytes()
    (tmp_path / "img0002.dcm").write_bytes(data[:-30])
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    (tmp_path / "notes.txt").write_text("ignored: not a DICOM name and no DICM marker")
    scan = scan_dicom(tmp_path)
    text = "\n".join(scan.problems)
    assert f"{tmp_path / 'report.dcm'}: a DICOM object without pixel data (Basic Text SR Storage" in text
    assert (
        f"{tmp_path / 'img0002.dcm'}: truncated: the pixel data needs 128 bytes, the file ends 30 bytes short" in text
    )
    assert f"{tmp_path / 'junk.dcm'}: not a readable DICOM file" in text
    assert "notes.txt" not in text and len(scan.problems) == 3


def test_pixel_data_shorter_than_the_header_says_is_named(tmp_path):
    """GDCM would read such a file without complaint (wrong values): the scan compares the sizes first."""
    files = write_series(tmp_path, known_volume((2, 4, 4)), geometry())
    ds = pydicom.dcmread(files[0])
    ds.BitsAllocated = 32  # the header now promises twice the bytes the file holds
    ds.save_as(files[0])
    (problem,) = scan_dicom(tmp_path).problems
    assert (
        problem == f"{files[0]}: the pixel data holds 32 bytes, the header (Rows x Columns x frames x "
        "BitsAllocated) needs 64"
    )


def test_undecodable_pixel_data_names_the_file(tmp_path):
    files = write_series(tmp_path, known_volume((2, 8, 8)), geometry())
    compress_files(files, pydicom.uid.RLELossless, tmp_path)
    series = scan_dicom(tmp_path).series[0]
    ds = pydicom.dcmread(files[1])
    ds.PixelData = ds.PixelData[:40] + bytes(8)  # a broken RLE stream
    ds.save_as(files[1])
    words = "pixel data in transfer syntax RLE Lossless cannot be decoded by pydicom .* nor GDCM"
    with pytest.raises(ImageIOError, match=f"{files[1]}: {words}"):
        read_series(series, reader="pydicom")


def test_gdcm_and_pydicom_readers_agree_and_rescale_per_slice(tmp_path):
    geo = geometry()
    vol = known_volume((4, 6, 5), seed=9, slope=2.0, intercept=-7)
    files = write_series(tmp_path / "a", vol, geo, slope=2.0, intercept=-7)
    series = scan_dicom(tmp_path / "a").series[0]
    np.testing.assert_array_equal(read_series(series, "gdcm")[0], read_series(series, "pydicom")[0])
    np.testing.assert_array_equal(read_series(series, "gdcm")[0][0], vol)
    # a rescale per slice (as PET series have): "auto" reads it with pydicom, slice by slice
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = 0.5 * (k + 1)
        ds.save_as(path)
    stored = np.round((vol - (-7)) / 2.0)
    expected = np.stack([stored[k] * 0.5 * (k + 1) - 7 for k in range(4)]).astype(np.float32)
    np.testing.assert_allclose(read_series(scan_dicom(tmp_path / "a").series[0])[0][0], expected, rtol=1e-6)


def test_without_pydicom_autoseg_imports_and_dicom_calls_name_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['pydicom'] = None; sys.modules['highdicom'] = None\n"
        "import autoseg.inference.predictor, autoseg.data.dicom.series as s\n"
        "try:\n    s.scan_dicom('somewhere')\nexcept Exception as e:\n"
        "    print(type(e).__name__, '|', e, '|', isinstance(e.__cause__, ImportError))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ImageIOError | somewhere: DICOM support needs pydicom and highdicom")
    assert 'pip install -e ".[dicom]"' in out and out.strip().endswith("| True")
