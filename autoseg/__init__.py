"""autoseg: self-configuring medical image segmentation.

The package follows one dataset through its stages, in data-flow order:

    data/           raw dataset (nnU-Net v2 layout): dataset.json, images, labels, integrity checks
    fingerprint/    dataset fingerprint: spacings, shapes, intensities      -> fingerprint.json
    planning/       rule-based planner: fingerprint -> plans                  -> plans.json
    preprocessing/  crop, normalise, resample every case                     -> preprocessed arrays
    networks/       U-Net family built from a plans' network spec
    training/       5-fold cross-validation with deep supervision            -> results/.../fold_k/
    inference/      sliding window, ensembles, export in the input geometry
    evaluation/     metrics, postprocessing choice, model selection          -> selection.json

`autoseg.cli` is a thin command line over these functions.
"""

__version__ = "0.1.0"
