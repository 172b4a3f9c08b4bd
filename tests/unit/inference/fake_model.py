"""A randomly initialised tiny trained model in a workspace (plans, fingerprint, run folders), not a test module."""

from __future__ import annotations

import numpy as np
import torch

from autoseg.data.geometry import Geometry
from autoseg.data.image_io import write_image
from autoseg.fingerprint.fingerprint import SCHEMA_VERSION as FP_VERSION
from autoseg.fingerprint.fingerprint import DatasetFingerprint, IntensityStats
from autoseg.networks.build import build_network
from autoseg.planning.plans import SCHEMA_VERSION, Configuration, NetworkSpec, Plans
from autoseg.training.checkpoint import save_checkpoint

OBLIQUE = (0.8, -0.6, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 1.0)


def tiny_configuration(name="3d_fullres", patch=(8, 16, 16), spacing=(2.0, 1.0, 1.0), channels=1) -> Configuration:
    ndim = len(patch)
    params = {
        "n_stages": 2,
        "features_per_stage": [4, 8],
        "kernel_sizes": [[3] * ndim] * 2,
        "strides": [[1] * ndim, [2] * ndim],
        "n_conv_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
        "conv_bias": True,
        "norm": "instance",
        "nonlin": "leaky_relu",
    }
    return Configuration(
        name=name,
        data_identifier=f"autoseg_{name}",
        spacing=tuple(spacing),
        patch_size=tuple(patch),
        median_shape=tuple(patch),
        batch_size=2,
        batch_dice=False,
        normalization=("zscore",) * channels,
        use_mask_for_norm=(False,) * channels,
        network=NetworkSpec("unet", params),
    )


def make_fake_model(
    ws,
    name: str = "Dataset991_Fake",
    configurations=None,
    folds=(0, 1, 2, 3, 4),
    n_labels: int = 2,
    channels: int = 1,
    seed: int = 0,
    transpose=(0, 1, 2),
) -> Plans:
    """Plans, fingerprint and fold_k/checkpoint_final.pt (random weights, the trainer's format) for each config."""
    configurations = configurations or [tiny_configuration(channels=channels)]
    plans = Plans(
        SCHEMA_VERSION, "default", name, "test", tuple(transpose), (2.0, 1.0, 1.0), (8, 16, 16), 8.0,
        tuple(configurations),
    )  # fmt: skip
    plans.save(ws.plans_file(name))
    labels = {"background": 0, **{f"organ{i}": i for i in range(1, n_labels + 1)}}
    stats = IntensityStats(0.0, 0.0, 1.0, -3.0, 3.0, -2.5, 2.5)
    fp = DatasetFingerprint(
        FP_VERSION, name, tuple(f"MR{i}" for i in range(channels)), labels, 5, ".nii.gz", (), (stats,) * channels, 1.0
    )
    fp.save(ws.fingerprint_file(name))
    torch.manual_seed(seed)
    for conf in configurations:
        for fold in folds:
            net = build_network(conf.network, channels, n_labels + 1, True)
            run = ws.run_dir(name, "default", conf.name, "default", fold)
            save_checkpoint(run / "checkpoint_final.pt", {"model": net.state_dict(), "epoch": 1, "fold": fold})
            plans.save(run / "plans.json")
    return plans


def write_case(
    folder, case_id: str, shape, spacing, direction=OBLIQUE, origin=(3.5, -7.25, 11.0), channels=1, seed=0,
    ending=".nii.gz",
):  # fmt: skip
    """Random image channel files CASE_000k<ending> with the given geometry; returns the Geometry."""
    rng = np.random.default_rng(seed)
    geo = Geometry(tuple(float(s) for s in spacing), tuple(origin), tuple(direction), 3)
    for c in range(channels):
        write_image(folder / f"{case_id}_{c:04d}{ending}", rng.normal(100, 20, shape).astype(np.float32), geo)
    return geo
