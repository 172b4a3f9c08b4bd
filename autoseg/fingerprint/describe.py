"""What a dataset is made of (labels, channels, file ending), answered once for every stage that needs it.

The fingerprint holds the answer once it exists (it travels with plans and bundles); before that, the raw
dataset.json does. Prediction, selection and bundles ask `describe_dataset` instead of choosing themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoseg.data.dataset import files_per_case, load_dataset
from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.workspace import Workspace


@dataclass(frozen=True)
class DatasetDescription:
    labels: dict[str, int]  # label name -> value, background included
    channel_names: tuple[str, ...]
    file_ending: str

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        return tuple(sorted(v for v in set(self.labels.values()) if v != 0))

    @property
    def files_per_case(self) -> int:
        return files_per_case(self.file_ending, self.channel_names)


def describe_dataset(ws: Workspace, name: str) -> DatasetDescription:
    """(labels, channel names, file ending) of dataset `name` from its fingerprint, else its raw dataset.json."""
    if ws.fingerprint_file(name).is_file():
        fp = DatasetFingerprint.load(ws.fingerprint_file(name))
        return DatasetDescription(dict(fp.labels), tuple(fp.channel_names), fp.file_ending)
    spec = load_dataset(ws.raw_dataset(name))
    return DatasetDescription(dict(spec.labels), tuple(spec.channel_names), spec.file_ending)
