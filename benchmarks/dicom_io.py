"""DICOM in / DICOM-SEG out against NIfTI in / out for one volume (docs/benchmarks.md, issue 16).

    python benchmarks/dicom_io.py [--slices 300] [--size 512] [--repeats 3] [--workdir DIR]

Writes a CT-like series of `--slices` single-frame files (int16, rescale intercept -1024, oblique orientation) and
the same volume as .nii.gz, plus a label map with two ellipsoids (labels 1 and 2; every slice of the series holds
label 1). Then times, as the median of `--repeats` runs (the page cache is warm after the first):
  - autoseg's DICOM reader: `scan_dicom` (headers of every file) and `read_series` (pixels, with pydicom and with
    GDCM: "auto" uses GDCM for single-frame series with one rescale);
  - SimpleITK's GDCM series reader on the same files (the alternative reader);
  - autoseg's NIfTI read of the same volume (`read_image`);
  - writing the label map as a DICOM-SEG (`write_dicom_seg`, highdicom) and as .nii.gz (`write_label`).
Run it under the heavy lock.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from autoseg.data.dicom.pixels import read_series
from autoseg.data.dicom.seg import write_dicom_seg
from autoseg.data.dicom.series import scan_dicom
from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_image, write_image, write_label

DIRECTION = np.array([[0.9848, -0.1736, 0.0], [0.1736, 0.9848, 0.0], [0.0, 0.0, 1.0]])  # 10 degrees about z


def write_ct_series(folder: Path, volume: np.ndarray, geometry: Geometry) -> None:
    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    d = geometry.direction_matrix()
    for k in range(volume.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Modality, ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "CT", "B1", "Bench", "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", "", "", ""
        ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer, ds.PositionReferenceIndicator = 1, k + 1, "bench", ""
        ds.ImagePositionPatient = [float(v) for v in np.asarray(geometry.origin) + k * geometry.spacing[0] * d[:, 2]]
        ds.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [geometry.spacing[1], geometry.spacing[2]]
        ds.SliceThickness = geometry.spacing[0]
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.PixelData = (volume[k] + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"ct{k + 1:04d}.dcm", enforce_file_format=True)


def median_time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dicom_io_", dir=args.workdir))
    z, n = args.slices, args.size
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, z), np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    volume = (rng.normal(0, 30, (z, n, n)) - 1000 * (xx**2 + yy**2 > 0.8)).astype(np.int16).astype(np.float32)
    labels = np.zeros((z, n, n), np.uint8)
    labels[(xx / 0.6) ** 2 + (yy / 0.5) ** 2 + (zz / 1.2) ** 2 < 1] = 1
    labels[((xx - 0.3) / 0.1) ** 2 + (yy / 0.1) ** 2 + (zz / 0.2) ** 2 < 1] = 2
    del zz, yy, xx
    geometry = Geometry((1.25, 0.7, 0.7), (-180.0, -170.0, 40.0), tuple(DIRECTION.ravel()), 3)
    write_ct_series(work / "series", volume, geometry)
    write_image(work / "vol_0000.nii.gz", volume, geometry)
    size_dicom = sum(p.stat().st_size for p in (work / "series").iterdir()) / 1e6
    rows = []

    t_scan, scan = median_time(lambda: scan_dicom(work / "series"), args.repeats)
    (series,) = scan.series
    rows.append(
        ("scan_dicom: headers of every file (pydicom), order, geometry", t_scan, f"{size_dicom:.0f} MB, {z} files")
    )
    for reader in ("pydicom", "gdcm"):
        t_read, (arr, geo) = median_time(lambda: read_series(series, reader), args.repeats)  # noqa: B023
        assert np.array_equal(arr[0], volume) and geo.matches(geometry) == []
        rows.append((f"read_series pixels, reader {reader}", t_read, ""))
        rows.append((f"autoseg DICOM read in all (scan + {reader} pixels)", t_scan + t_read, ""))

    def gdcm():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(work / "series")))
        return sitk.GetArrayFromImage(reader.Execute())

    t_gdcm, g_arr = median_time(gdcm, args.repeats)
    assert np.array_equal(g_arr, volume)
    rows.append(("SimpleITK's own GDCM series reading (GetGDCMSeriesFileNames + Execute), for comparison", t_gdcm, ""))
    t_nii, (n_arr, _) = median_time(lambda: read_image([work / "vol_0000.nii.gz"]), args.repeats)
    assert np.array_equal(n_arr[0], volume)
    size_nii = (work / "vol_0000.nii.gz").stat().st_size / 1e6
    rows.append(("read NIfTI .nii.gz, autoseg (SimpleITK)", t_nii, f"{size_nii:.0f} MB"))

    names = {1: "body", 2: "lesion"}
    t_seg, path = median_time(
        lambda: write_dicom_seg(work / "out" / "seg.dcm", labels, geometry, series=series, names=names), args.repeats
    )
    rows.append(("write DICOM-SEG, highdicom", t_seg, f"{path.stat().st_size / 1e6:.1f} MB"))
    t_lab, lpath = median_time(lambda: write_label(work / "out" / "seg.nii.gz", labels, geometry), args.repeats)
    rows.append(("write label map .nii.gz, autoseg", t_lab, f"{lpath.stat().st_size / 1e6:.1f} MB"))
    check = pydicom.dcmread(path, stop_before_pixels=True)
    assert int(check.NumberOfFrames) >= z  # every slice holds label 1

    print(f"volume {z} x {n} x {n} int16, labels 1 (every slice) and 2; median of {args.repeats} runs; {work}")
    print("| step | seconds | size |\n|---|---|---|")
    for what, seconds, note in rows:
        print(f"| {what} | {seconds:.2f} | {note} |")


if __name__ == "__main__":
    main()
