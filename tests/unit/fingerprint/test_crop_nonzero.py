"""Crop to the nonzero region: mask with filled holes and its bounding box."""

import numpy as np

from autoseg.data.crop import bounding_box, nonzero_mask


def test_mask_is_any_channel_with_holes_filled():
    image = np.zeros((2, 5, 6, 7), np.float32)
    image[0, 1:4, 1:5, 2:6] = 3.0  # a box in channel 0 ...
    image[0, 2, 2, 3] = 0.0  # ... with an enclosed hole
    image[1, 4, 5, 6] = -1.0  # a lone voxel in channel 1 only
    mask = nonzero_mask(image)
    assert mask.dtype == bool and mask.shape == (5, 6, 7)
    assert mask[2, 2, 3]  # hole filled
    assert mask[4, 5, 6]  # channel 1 counts
    assert mask.sum() == 3 * 4 * 4 + 1


def test_bounding_box_is_half_open_per_axis():
    mask = np.zeros((6, 8, 9), bool)
    mask[1, 2, 3] = True
    mask[4, 6, 5] = True
    assert bounding_box(mask) == ((1, 5), (2, 7), (3, 6))


def test_empty_mask_keeps_full_extent():
    assert bounding_box(np.zeros((3, 4, 5), bool)) == ((0, 3), (0, 4), (0, 5))
