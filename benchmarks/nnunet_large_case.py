"""A TotalSegmentator-scale case for `benchmarks/nnunet_models.py`: a 105-class nnU-Net v2 model and a large CT.

Run with the Python of the venv that has nnU-Net v2 installed (the model is a real dynamic_network_architectures
PlainConvUNet with random weights, saved in nnU-Net's checkpoint format, so both tools read the same file)::

    /work/nnunet_venv/bin/python benchmarks/nnunet_large_case.py --out /work/tmp/14/large

writes OUT/imagesTs/ct_0000.nii.gz (a generated CT: 512 x 512 x 300 voxels at 0.8 x 0.8 x 1.5 mm, int16 HU: air,
a body ellipse of soft tissue with denser blobs and a spine-like column) and
OUT/Dataset900_LargeCase/nnUNetTrainer__nnUNetPlans__3d_fullres/ (plans.json with one 3d_fullres configuration at
TotalSegmentator's --fast spacing of 3 mm, CTNormalization, a 6-stage PlainConvUNet with features 32..320 and patch
96^3; dataset.json with 105 labels; fold_0/checkpoint_final.pth). Not a CI test: it needs nnU-Net's packages.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

CT_STATS = {"max": 3000.0, "mean": 60.0, "median": 45.0, "min": -1000.0, "percentile_00_5": -950.0,
            "percentile_99_5": 1500.0, "std": 250.0}  # fmt: skip


def make_ct(path: Path, shape=(300, 512, 512), spacing=(1.5, 0.8, 0.8), seed=0) -> None:
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    ct = np.full(shape, -1000, dtype=np.int16)
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 150.0) ** 2 <= 1.0
    ct[:, body[0]] = 40
    for _ in range(40):  # organ-like blobs
        c = rng.uniform((20, 120, 120), (280, 390, 390))
        r = rng.uniform(8, 30, 3)
        blob = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
        ct[blob & body] = int(rng.integers(-100, 300))
    spine = ((y - 360) / 18.0) ** 2 + ((x - 256) / 18.0) ** 2 <= 1.0
    ct[:, spine[0]] = 700
    ct = (ct + rng.normal(0, 15, shape)).clip(-1024, 3000).astype(np.int16)
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    img.SetOrigin((-204.8, -204.8, -225.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)


def make_model(folder: Path, classes: int = 105, patch=(96, 96, 96), seed=0) -> None:
    n = 6
    kw = {
        "n_stages": n,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    resampling = {f"resampling_fn_{k}": "resample_data_or_seg_to_shape" for k in ("data", "seg", "probabilities")}
    for kind, order in (("data", 3), ("seg", 1), ("probabilities", 1)):
        resampling[f"resampling_fn_{kind}_kwargs"] = {"is_seg": kind == "seg", "order": order, "order_z": 0,
                                                      "force_separate_z": None}  # fmt: skip
    conf = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch),
        "median_image_size_in_voxels": [150.0, 137.0, 137.0],
        "spacing": [3.0, 3.0, 3.0],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        **resampling,
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": kw, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }  # fmt: skip
    plans = {
        "dataset_name": "Dataset900_LargeCase",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.5, 0.8, 0.8],
        "original_median_shape_after_transp": [300, 512, 512],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": conf},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": CT_STATS},
    }
    labels = {"background": 0, **{f"class_{i:03d}": i for i in range(1, classes)}}
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    fingerprint = {"foreground_intensity_properties_per_channel": {"0": CT_STATS}, "spacings": [[1.5, 0.8, 0.8]],
                   "shapes_after_crop": [[300, 512, 512]], "median_relative_size_after_cropping": 1.0}  # fmt: skip
    (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    torch.manual_seed(seed)
    ops = {"conv_op": torch.nn.Conv3d, "norm_op": torch.nn.InstanceNorm3d, "nonlin": torch.nn.LeakyReLU,
           "dropout_op": None}  # fmt: skip
    net = PlainConvUNet(1, num_classes=classes, **{**kw, **ops})
    ckpt = {
        "network_weights": net.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 0,
        "init_args": {
            "plans": plans,
            "configuration": "3d_fullres",
            "fold": 0,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },  # fmt: skip
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--classes", type=int, default=105)
    args = ap.parse_args()
    out = Path(args.out)
    make_model(out / "Dataset900_LargeCase" / "nnUNetTrainer__nnUNetPlans__3d_fullres", args.classes)
    make_ct(out / "imagesTs" / "ct_0000.nii.gz")
    print(f"written under {out}")


if __name__ == "__main__":
    main()
