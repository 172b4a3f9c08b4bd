"""Ensembles across configurations: probability averaging, argmax, folders with geometry."""

from __future__ import annotations

import numpy as np
import pytest

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import read_file, write_label
from autoseg.data.probabilities import (
    average_probabilities,
    load_probabilities,
    probabilities_to_labels,
    save_probabilities,
)
from autoseg.errors import ImageIOError
from autoseg.inference.ensemble import ensemble_folders


def test_average_and_argmax_hand_computed():
    a = np.stack([[0.6, 0.2, 0.5], [0.3, 0.7, 0.1], [0.1, 0.1, 0.4]]).astype(np.float32)
    b = np.stack([[0.2, 0.5, 0.5], [0.3, 0.1, 0.1], [0.5, 0.4, 0.4]]).astype(np.float32)
    avg = average_probabilities([a, b])
    np.testing.assert_allclose(avg, [[0.4, 0.35, 0.5], [0.3, 0.4, 0.1], [0.3, 0.25, 0.4]], atol=1e-7)
    # voxel 0: class 0 (0.4); voxel 1: class 1 (0.4 > 0.35); voxel 2: class 0 (0.5)
    np.testing.assert_array_equal(probabilities_to_labels(avg), [0, 1, 0])
    # a tie goes to the lower label; single members disagree with the ensemble
    np.testing.assert_array_equal(probabilities_to_labels(np.array([[0.5], [0.5]])), [0])
    np.testing.assert_array_equal(probabilities_to_labels(a), [0, 1, 0])
    np.testing.assert_array_equal(probabilities_to_labels(b), [2, 0, 0])
    with pytest.raises(ValueError, match="member 1 has shape"):
        average_probabilities([a, b[:, :2]])


def test_ensemble_folders_writes_argmax_with_first_members_geometry(tmp_path):
    geo = Geometry((2.5, 1.0, 0.5), (1.0, 2.0, 3.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    p1 = np.zeros((2, 1, 1, 4), np.float32)
    p2 = np.zeros((2, 1, 1, 4), np.float32)
    p1[1, 0, 0] = [0.9, 0.6, 0.3, 0.2]
    p2[1, 0, 0] = [0.8, 0.3, 0.8, 0.1]
    p1[0], p2[0] = 1 - p1[1], 1 - p2[1]
    for folder, p in (("m1", p1), ("m2", p2)):
        save_probabilities(tmp_path / folder / "c.npz", p)
        write_label(tmp_path / folder / "c.nii.gz", np.argmax(p, 0), geo)
    done = ensemble_folders([tmp_path / "m1", tmp_path / "m2"], tmp_path / "ens", ".nii.gz", save_npz=True)
    assert done == ["c"]
    seg, g = read_file(tmp_path / "ens" / "c.nii.gz")
    np.testing.assert_array_equal(seg[0, 0, 0], [1, 0, 1, 0])  # means 0.85, 0.45, 0.55, 0.15
    assert g.spacing == geo.spacing and g.origin == geo.origin
    np.testing.assert_allclose(
        load_probabilities(tmp_path / "ens" / "c.npz")[1, 0, 0], [0.85, 0.45, 0.55, 0.15], atol=1e-3
    )
    (tmp_path / "m2" / "c.npz").unlink()
    with pytest.raises(ImageIOError, match="m2: probabilities missing for 1 case"):
        ensemble_folders([tmp_path / "m1", tmp_path / "m2"], tmp_path / "ens2", ".nii.gz")
