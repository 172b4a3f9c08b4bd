"""DICOM series written with pydicom from a known volume and geometry (for the tests; not a test module)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from autoseg.data.geometry import Geometry

SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
# a rotation about an oblique axis (right-handed, det +1): every direction cosine is non-zero
OBLIQUE_3D = tuple(
    np.round(
        np.array([[0.9363, -0.2896, 0.1987], [0.3130, 0.9447, -0.0978], [-0.1593, 0.1538, 0.9752]]),
        4,
    ).ravel()
)


def orthonormal(direction) -> tuple[float, ...]:
    """The nearest rotation to a 3x3 matrix (so rounded cosines are exactly orthonormal)."""
    u, _, vt = np.linalg.svd(np.asarray(direction, dtype=float).reshape(3, 3))
    return tuple((u @ vt).ravel().tolist())


def known_volume(shape, seed: int = 0, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """A float32 volume whose values are stored exactly as int16 with `slope` and `intercept`."""
    stored = np.random.default_rng(seed).integers(-500, 1500, size=shape)
    return (stored * slope + intercept).astype(np.float32)


def base_dataset(modality: str, study_uid: str, series_uid: str, patient_id: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient_id, f"Test^{patient_id}"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20250101", "120000", "A1"
    ds.ReferringPhysicianName, ds.Manufacturer = "", "test"
    ds.SeriesNumber, ds.SeriesDescription = series_number, f"{modality} test series"
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def write_series(
    folder, volume: np.ndarray, geometry: Geometry, modality: str = "MR", slope: float = 1.0,
    intercept: float = 0.0, reverse: bool = False, patient_id: str = "P1", series_number: int = 1,
    study_uid: str | None = None, prefix: str = "img",
) -> list[Path]:  # fmt: skip
    """One single-frame file per slice of `volume` (Z, Y, X) placed by `geometry`; stored = (value - intercept) /
    slope as int16. `reverse`: InstanceNumber and file names count down the stack. Returns the files by slice."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = geometry.direction_matrix()
    origin = np.asarray(geometry.origin)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_of_reference = generate_uid()
    paths = []
    n = volume.shape[0]
    for k in range(n):
        ds = base_dataset(modality, study_uid, series_uid, patient_id, series_number)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        number = n - k if reverse else k + 1
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [float(v) for v in origin + k * geometry.spacing[0] * d[:, 2]]
        ds.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [float(geometry.spacing[1]), float(geometry.spacing[2])]
        ds.SliceThickness = float(geometry.spacing[0])
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if modality == "CT":
            ds.RescaleType = "HU"
        stored = np.round((volume[k].astype(np.float64) - intercept) / slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        path = folder / f"{prefix}{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_dataset(path) -> Dataset:
    return pydicom.dcmread(path)


GDCM_COMPRESSORS = {"1.2.840.10008.1.2.4.70": "JPEG", "1.2.840.10008.1.2.4.90": "JPEG2000"}


def compress_files(paths, syntax: str, scratch) -> None:
    """Rewrite each file's pixel data in transfer syntax `syntax`: RLE and JPEG-LS with pydicom's encoders, JPEG
    lossless (process 14) and JPEG 2000 lossless with the stream GDCM (SimpleITK) encodes from the same pixels."""
    for path in paths:
        ds = pydicom.dcmread(path)
        if syntax not in GDCM_COMPRESSORS:
            ds.compress(syntax)
        else:
            writer = sitk.ImageFileWriter()
            writer.SetImageIO("GDCMImageIO")
            writer.UseCompressionOn()
            writer.SetCompressor(GDCM_COMPRESSORS[syntax])
            tmp = Path(scratch) / "gdcm.dcm"
            writer.SetFileName(str(tmp))
            writer.Execute(sitk.GetImageFromArray(ds.pixel_array[None].astype(np.int16)))
            encoded = pydicom.dcmread(tmp)
            assert encoded.file_meta.TransferSyntaxUID == syntax, encoded.file_meta.TransferSyntaxUID
            ds.PixelData = encoded.PixelData
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)


def write_enhanced(folder: Path, files) -> Path:
    """The single-frame series `files` as one multi-frame (legacy converted enhanced MR) file in `folder`."""
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=[pydicom.dcmread(p) for p in files], series_instance_uid=hd.UID(), series_number=9,
        sop_instance_uid=hd.UID(), instance_number=1,
    )  # fmt: skip
    folder.mkdir()
    enhanced.save_as(folder / "enhanced.dcm")
    return folder / "enhanced.dcm"
