"""The label description: classes vs regions, the ignore label, and the regions_class_order export rule."""

import numpy as np
import pytest

from autoseg.data.labels import class_key, label_scheme, parse_labels
from autoseg.data.probabilities import probabilities_to_labels
from autoseg.errors import DatasetError

BRATS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}


def test_plain_labels_are_softmax_classes():
    s = label_scheme({"background": 0, "a": 1, "b": 2})
    assert not s.has_regions and s.activation == "softmax" and s.ignore_label is None
    assert s.classes == (1, 2) and s.num_outputs == 3
    assert s.file_values == (0, 1, 2) and s.written_names() == {1: "a", 2: "b"}


def test_ignore_label_has_no_output_and_is_not_a_class():
    s = label_scheme({"background": 0, "a": 1, "b": 2, "ignore": 3})
    assert s.ignore_label == 3 and s.file_values == (0, 1, 2, 3)
    assert s.foreground_labels == (1, 2) and s.classes == (1, 2) and s.num_outputs == 3


def test_regions_parsed_in_dataset_json_order():
    s = label_scheme(BRATS, [1, 2, 3])
    assert s.has_regions and s.activation == "sigmoid"
    assert s.regions == ((1, 2, 3), (2, 3), (3,)) and s.classes == s.regions and s.num_outputs == 3
    assert s.foreground_labels == (1, 2, 3) and s.regions_class_order == (1, 2, 3)
    assert [class_key(r) for r in s.regions] == ["1,2,3", "2,3", "3"]
    assert s.written_names() == {1: "whole", 2: "core", 3: "enhancing"}


def test_regions_with_ignore_label():
    s = label_scheme({**BRATS, "ignore": 4}, [1, 2, 3])
    assert s.ignore_label == 4 and s.regions == ((1, 2, 3), (2, 3), (3,)) and s.num_outputs == 3


def test_overlapping_regions_export_hand_computed():
    """Three voxels, regions whole={1,2}, posterior={2}, order [1, 2]: a later region overwrites an earlier one."""
    s = label_scheme({"background": 0, "whole": [1, 2], "posterior": [2]}, [1, 2])
    probs = np.array(
        [
            # voxel: 0     1     2     3     4
            [0.20, 0.90, 0.90, 0.40, 0.51],  # whole
            [0.95, 0.10, 0.70, 0.80, 0.50],  # posterior (0.50 is not above the threshold)
        ],
        dtype=np.float32,
    )
    # voxel 0: only posterior above 0.5 -> 2 (regions do not need to be nested in the prediction)
    # voxel 1: whole -> 1; voxel 2: whole then posterior -> 2; voxel 3: posterior -> 2; voxel 4: whole -> 1
    expected = [2, 1, 2, 2, 1]
    assert s.to_labels(probs).tolist() == expected
    assert probabilities_to_labels(probs, s).tolist() == expected
    assert probabilities_to_labels(probs).tolist() == [1, 0, 0, 1, 0]  # the argmax rule, for contrast
    reversed_order = label_scheme({"background": 0, "posterior": [2], "whole": [1, 2]}, [2, 1])
    # posterior first, whole last: whole overwrites posterior where both are above 0.5 (voxel 2), not voxel 3
    assert reversed_order.to_labels(probs[::-1]).tolist() == [2, 1, 1, 2, 1]


def test_to_labels_checks_the_number_of_regions():
    s = label_scheme(BRATS, [1, 2, 3])
    with pytest.raises(ValueError, match="2 region probabilities, regions_class_order has 3"):
        s.to_labels(np.zeros((2, 4)))


@pytest.mark.parametrize(
    "labels, order, words",
    [
        ({"background": 0, "w": [1, 2]}, None, '"regions_class_order" is missing; a dataset with regions needs one'),
        ({"background": 0, "w": [1, 2], "p": 2}, [1, 2, 3], '"regions_class_order" must be a list of 2 integers'),
        ({"background": 0, "w": [1, 2], "p": 2}, [1, 5], "holds [5], which are not foreground label values"),
        ({"background": 0, "w": [0, 1]}, [1], "region 'w' [0, 1] must not contain background"),
        ({"background": 0, "a": 1, "ignore": [2, 3]}, None, '"ignore" label must be one integer'),
        ({"background": 0, "a": 1, "ignore": 1}, None, "two label names share one value"),
        ({"background": 0, "a": 1, "b": 3}, None, "consecutive from 0"),
        ({"background": 0, "a": True}, None, "bad: {'a': True}"),
        ({"background": 0, "a": []}, None, "bad: {'a': []}"),
        ({}, None, '"labels" must be a non-empty object'),
    ],
)
def test_label_problems_name_the_file(labels, order, words):
    scheme, problems = parse_labels(labels, order, "X/dataset.json")
    assert scheme is None and any(p.startswith("X/dataset.json: ") and words in p for p in problems), problems
    with pytest.raises(DatasetError, match="X/dataset.json"):
        label_scheme(labels, order, "X/dataset.json")


def test_all_label_problems_in_one_run():
    _, problems = parse_labels({"a": 1, "ignore": 7, "w": [0, 1]}, None, "D")
    assert len(problems) >= 3  # background missing, ignore not the highest, region with background, no order
