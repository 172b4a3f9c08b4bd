"""What a dataset is made of (labels, channels, file ending), answered once for every stage that needs it.

The fingerprint holds the answer once it exists (it travels with plans and bundles); before that, the raw
dataset.json does. Prediction, selection and bundles ask `describe_dataset` instead of choosing themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoseg.data.dataset import files_per_case, load_dataset
from autoseg.data.labels import LabelScheme, label_scheme
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.workspace import Workspace


@dataclass(frozen=True)
class DatasetDescription:
    labels: dict[str, int | list[int]]  # label name -> value (a list for a region), background included
    channel_names: tuple[str, ...]
    file_ending: str
    regions_class_order: tuple[int, ...] | None = None

    @property
    def scheme(self) -> LabelScheme:
        """What the labels mean: classes or regions, ignore label (`autoseg.data.labels`)."""
        return label_scheme(self.labels, self.regions_class_order)

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        """Label values other than background and the ignore label."""
        return self.scheme.foreground_labels

    @property
    def files_per_case(self) -> int:
        return files_per_case(self.file_ending, self.channel_names)


def describe_dataset(ws: Workspace, name: str) -> DatasetDescription:
    """(labels, channel names, file ending) of dataset `name` from its fingerprint, else its raw dataset.json."""
    if ws.fingerprint_file(name).is_file():
        fp = DatasetFingerprint.load(ws.fingerprint_file(name))
        return DatasetDescription(dict(fp.labels), tuple(fp.channel_names), fp.file_ending, fp.regions_class_order)
    spec = load_dataset(ws.raw_dataset(name))
    return DatasetDescription(dict(spec.labels), tuple(spec.channel_names), spec.file_ending, spec.regions_class_order)
