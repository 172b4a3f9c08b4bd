"""Seconds of the class-by-class export (`restored_argmax`) of one case with 1, 2, ... threads.

    python benchmarks/export_threads.py --nnunet-model FOLDER --image CASE_0000.nii.gz [--threads 1 2] [--backend auto]

Runs the network half once (`Predictor.network_output`, TTA off, fold 0), then restores the labels on the raw grid
with each thread count (wall seconds, best of `--repeats`) and checks that every count gives the same labels. Made
for the TotalSegmentator-scale case of `benchmarks/nnunet_large_case.py` (105 classes, 512 x 512 x 300).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from autoseg.data.image_io import read_file
from autoseg.inference.export import restored_argmax
from autoseg.inference.nnunet_source import load_nnunet_model
from autoseg.inference.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnunet-model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--backend", default="torch")
    args = ap.parse_args()
    model = load_nnunet_model(args.nnunet_model, [0])
    image, geometry = read_file(args.image)
    start = time.perf_counter()
    predictor = Predictor(model.source, model.configuration, None, "cpu", 0.5, False, backend=args.backend)
    member = predictor.network_output(image, geometry)
    print(f"network half: {time.perf_counter() - start:.1f} s, probabilities {member[0].shape}", flush=True)
    reference = None
    for threads in args.threads:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            labels = restored_argmax([member], threads)
            best = min(best, time.perf_counter() - start)
        same = reference is None or np.array_equal(labels, reference)
        reference = labels if reference is None else reference
        print(
            f"export, {threads} thread(s): {best:.1f} s, labels {labels.shape}, same as the first: {same}", flush=True
        )


if __name__ == "__main__":
    main()
