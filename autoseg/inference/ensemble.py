"""Ensembles across configurations: average the probabilities (raw image grid), then take the argmax.

For a dataset with regions the probabilities are the per-region sigmoids; they are averaged the same way and turned
into labels through regions_class_order (`autoseg.data.labels.LabelScheme.to_labels`).

Folds of one configuration are averaged earlier, in logit space, by the predictor (as nnU-Net does); different
configurations are combined here as probabilities, because their logits are not on a common scale. Probability files
are ``<case>.npz`` files (`autoseg.data.probabilities`), as written by ``autoseg predict --save-probabilities`` and
by the end-of-fold validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autoseg.data.image_io import read_file, write_label
from autoseg.data.labels import LabelScheme
from autoseg.data.probabilities import average_probability_files, probabilities_to_labels, save_probabilities
from autoseg.errors import ImageIOError
from autoseg.log import progress


def ensemble_folders(
    inputs: Sequence[str | Path],
    output: str | Path,
    file_ending: str,
    case_ids: Sequence[str] | None = None,
    save_npz: bool = False,
    scheme: LabelScheme | None = None,
) -> list[str]:
    """Ensemble the ``.npz`` files of several prediction folders into `output` -> the case ids written.

    Each output segmentation gets the geometry of the first folder's ``<case><file_ending>``. Without `case_ids`,
    the cases that have a ``.npz`` in every input are used; a case missing in one input is an error. `scheme`: the
    dataset's labels (regions: sigmoid probabilities and regions_class_order); None: argmax.
    """
    inputs, output = [Path(p) for p in inputs], Path(output)
    if case_ids is None:
        sets = [{p.name[:-4] for p in d.glob("*.npz") if not p.name.startswith(".")} for d in inputs]
        case_ids = sorted(set.union(*sets)) if sets else []
        for d, s in zip(inputs, sets):
            missing = sorted(set(case_ids) - s)
            if missing:
                raise ImageIOError(f"{d}: probabilities missing for {len(missing)} case(s): {', '.join(missing[:5])}")
    output.mkdir(parents=True, exist_ok=True)
    for cid in progress(case_ids, desc="ensemble", unit="case"):
        probs = average_probability_files([d / f"{cid}.npz" for d in inputs])
        _, geometry = read_file(inputs[0] / f"{cid}{file_ending}")
        write_label(output / f"{cid}{file_ending}", probabilities_to_labels(probs, scheme), geometry)
        if save_npz:
            save_probabilities(output / f"{cid}.npz", probs)
    return list(case_ids)
