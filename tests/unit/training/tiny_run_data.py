"""A tiny preprocessed dataset written directly in the storage format (no resampling, no crop, identity transpose)."""

from __future__ import annotations

import dataclasses

import numpy as np

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_label
from autoseg.data.synthetic import synthetic_case
from autoseg.fingerprint.fingerprint import SCHEMA_VERSION as FP_VERSION
from autoseg.fingerprint.fingerprint import CaseFingerprint, DatasetFingerprint, IntensityStats
from autoseg.planning.plans import SCHEMA_VERSION, Configuration, NetworkSpec, Plans
from autoseg.preprocessing.storage import CaseProperties, PreprocessedCase, save_case

DATASET = "Dataset990_Tiny"


def tiny_plans(patch=(8, 16, 16), batch_size=2) -> Plans:
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    params = {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": strides,
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm": "instance",
        "nonlin": "leaky_relu",
    }
    conf = Configuration(
        name="3d_fullres",
        data_identifier="autoseg_3d_fullres",
        spacing=(2.0, 1.0, 1.0),
        patch_size=tuple(patch),
        median_shape=(10, 20, 20),
        batch_size=batch_size,
        batch_dice=False,
        normalization=("zscore",),
        use_mask_for_norm=(False,),
        network=NetworkSpec("unet", params),
    )
    params_2d = {**params, "kernel_sizes": [[3, 3]] * 3, "strides": [s[1:] for s in strides]}
    conf_2d = dataclasses.replace(
        conf, name="2d", spacing=(1.0, 1.0), patch_size=(16, 16), median_shape=(20, 20), batch_size=4,
        batch_dice=True, network=NetworkSpec("unet", params_2d),
    )  # fmt: skip
    return Plans(
        SCHEMA_VERSION, "default", DATASET, "test", (0, 1, 2), (2.0, 1.0, 1.0), (10, 20, 20), 8.0, (conf, conf_2d)
    )


def make_tiny_dataset(ws, n_cases: int = 6, shape=(10, 20, 20), seed: int = 0) -> Plans:
    """Write plans, fingerprint, preprocessed cases and gt_segmentations of `n_cases` synthetic cases."""
    rng = np.random.default_rng(seed)
    plans = tiny_plans()
    folder = ws.preprocessed_config(DATASET, plans.configurations[0].data_identifier)
    gt = ws.gt_folder(DATASET)
    geo = Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist()))
    fps = []
    for i in range(n_cases):
        img, lab = synthetic_case(shape, rng, n_labels=2)
        data = ((img - img.mean()) / img.std()).astype(np.float32)
        cid = f"case_{i:03d}"
        props = CaseProperties(
            cid,
            geo,
            shape,
            tuple((0, s) for s in shape),
            shape,
            (2.0, 1.0, 1.0),
            (2.0, 1.0, 1.0),
            shape,
            (0, 1, 2),
            (1, 2),
        )
        locs = {v: np.argwhere(lab == v).astype(np.int32) for v in (1, 2)}
        save_case(folder, PreprocessedCase(data, lab[None].astype(np.int8), props, locs))
        write_label(gt / f"{cid}.nii.gz", lab, geo)
        fps.append(CaseFingerprint(cid, (2.0, 1.0, 1.0), shape))
    stats = IntensityStats(0.0, 0.0, 1.0, -3.0, 3.0, -2.5, 2.5)
    fp = DatasetFingerprint(
        FP_VERSION,
        DATASET,
        ("CT",),
        {"background": 0, "organ1": 1, "organ2": 2},
        n_cases,
        ".nii.gz",
        tuple(fps),
        (stats,),
        1.0,
    )
    fp.save(ws.fingerprint_file(DATASET))
    plans.save(ws.plans_file(DATASET))
    return plans
