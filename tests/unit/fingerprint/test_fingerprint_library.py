"""dataset_fingerprints/: every file loads, has a source note, and is listed in the README."""

from pathlib import Path

import numpy as np
import pytest

from autoseg.fingerprint.fingerprint import DatasetFingerprint
from autoseg.fingerprint.library import build_msd_library, load_library

LIBRARY = Path(__file__).resolve().parents[3] / "dataset_fingerprints"
PLANNER_CASES = Path(__file__).resolve().parents[4] / "shared" / "reference" / "planner_cases"
MSD_CASES = {  # name: (n cases, channels)
    "msd01_braintumour": (484, 4),
    "msd02_heart": (20, 1),
    "msd03_liver": (131, 1),
    "msd04_hippocampus": (260, 1),
    "msd05_prostate": (32, 2),
    "msd06_lung": (63, 1),
    "msd07_pancreas": (281, 1),
    "msd08_hepaticvessel": (303, 1),
    "msd09_spleen": (41, 1),
    "msd10_colon": (126, 1),
}


def test_every_library_file_loads_and_names_its_source():
    library = load_library(LIBRARY)
    assert set(MSD_CASES) | {"Dataset004_Hippocampus", "Dataset104_Hippocampus2D"} == set(library)
    readme = (LIBRARY / "README.md").read_text()
    for stem, fp in library.items():
        assert f"`{stem}.json`" in readme
        assert len(fp.source) > 40 and fp.source != "computed by autoseg fingerprint"
        assert len(fp.cases) == fp.num_training and len(fp.intensity) == len(fp.channel_names)
        assert all(len(c.spacing) == len(c.shape_after_crop) == 3 for c in fp.cases)


@pytest.mark.parametrize("name", sorted(MSD_CASES))
def test_msd_files_have_the_published_case_counts(name):
    fp = DatasetFingerprint.load(LIBRARY / f"{name}.json")
    assert (len(fp.cases), len(fp.channel_names)) == MSD_CASES[name]
    assert "Synthetic" in fp.source and "planner_cases" in fp.source


def test_real_hippocampus_fingerprint_medians():
    fp = DatasetFingerprint.load(LIBRARY / "Dataset004_Hippocampus.json")
    assert fp.median_spacing.tolist() == [1.0, 1.0, 1.0]
    assert fp.median_shape_after_crop.tolist() == [36.0, 50.0, 35.0]
    assert fp.median_relative_size_after_cropping == 1.0
    assert all(c.label_volumes_ml is not None and c.shape_before_crop for c in fp.cases)
    flat = DatasetFingerprint.load(LIBRARY / "Dataset104_Hippocampus2D.json")
    assert flat.is_2d and np.median(flat.spacings[:, 0]) == 999.0


def test_build_msd_library_reproduces_the_committed_files(tmp_path):
    written = build_msd_library(PLANNER_CASES, tmp_path)
    assert [p.stem for p in written] == sorted(MSD_CASES)
    for p in written:
        assert p.read_bytes() == (LIBRARY / p.name).read_bytes()
