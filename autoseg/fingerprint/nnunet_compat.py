"""Read nnU-Net v2's ``dataset_fingerprint.json`` (+ the ``dataset.json`` beside it) as a DatasetFingerprint.

nnU-Net users can then plan with autoseg from their existing fingerprints and compare plans directly.
nnU-Net keeps no per-case shapes before cropping or label volumes; those fields are None.
"""

from __future__ import annotations

from pathlib import Path

from autoseg.errors import FingerprintError
from autoseg.fingerprint.fingerprint import SCHEMA_VERSION, CaseFingerprint, DatasetFingerprint, IntensityStats
from autoseg.serialization import load_json

NNUNET_KEYS = (
    "spacings",
    "shapes_after_crop",
    "foreground_intensity_properties_per_channel",
    "median_relative_size_after_cropping",
)


def is_nnunet_fingerprint(data: object) -> bool:
    return isinstance(data, dict) and all(k in data for k in NNUNET_KEYS)


def from_nnunet(
    fingerprint_path: str | Path, dataset_json: str | Path | None = None, dataset_name: str | None = None
) -> DatasetFingerprint:
    """Convert; `dataset_json` defaults to the file beside the fingerprint."""
    fingerprint_path = Path(fingerprint_path)
    dataset_json = Path(dataset_json) if dataset_json else fingerprint_path.parent / "dataset.json"
    try:
        fp = load_json(fingerprint_path)
        ds = load_json(dataset_json)
    except ValueError as exc:
        raise FingerprintError(f"{exc} (an nnU-Net fingerprint needs its dataset.json beside it)") from exc
    if not is_nnunet_fingerprint(fp):
        raise FingerprintError(f"{fingerprint_path}: not an nnU-Net fingerprint (needs keys {', '.join(NNUNET_KEYS)})")
    channels = ds.get("channel_names") or ds.get("modality")
    if not isinstance(channels, dict) or "labels" not in ds:
        raise FingerprintError(f"{dataset_json}: needs 'channel_names' and 'labels'")
    if len(fp["spacings"]) != len(fp["shapes_after_crop"]):
        raise FingerprintError(f"{fingerprint_path}: spacings and shapes_after_crop differ in length")
    props = fp["foreground_intensity_properties_per_channel"]
    try:
        intensity = tuple(
            IntensityStats(**{k: float(props[str(c)][k]) for k in IntensityStats.__dataclass_fields__})
            for c in range(len(channels))
        )
    except KeyError as exc:
        raise FingerprintError(f"{fingerprint_path}: intensity properties lack {exc}") from exc
    cases = tuple(
        CaseFingerprint(
            case_id=f"case_{i:04d}", spacing=tuple(float(v) for v in sp), shape_after_crop=tuple(int(v) for v in sh)
        )
        for i, (sp, sh) in enumerate(zip(fp["spacings"], fp["shapes_after_crop"]))
    )
    return DatasetFingerprint(
        schema_version=SCHEMA_VERSION,
        dataset=dataset_name or ds.get("name") or fingerprint_path.parent.name,
        channel_names=tuple(channels[str(i)] for i in range(len(channels))),
        labels={k: v for k, v in ds["labels"].items()},
        num_training=int(ds.get("numTraining", len(cases))),
        file_ending=ds.get("file_ending", ".nii.gz"),
        cases=cases,
        intensity=intensity,
        median_relative_size_after_cropping=float(fp["median_relative_size_after_cropping"]),
        source=f"converted from nnU-Net fingerprint {fingerprint_path.name}",
        regions_class_order=tuple(ds["regions_class_order"]) if ds.get("regions_class_order") else None,
    )
