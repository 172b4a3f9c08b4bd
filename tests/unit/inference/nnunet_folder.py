"""Test helper: an nnU-Net v2 trained-model folder written from nnU-Net's public on-disk format.

``<root>/Dataset999_Test/nnUNetTrainer__nnUNetPlans__<configuration>/`` with plans.json (configurations with an
``architecture`` entry as dynamic_network_architectures is described there), dataset.json,
dataset_fingerprint.json and ``fold_<k>/checkpoint_final.pth`` holding nnU-Net's checkpoint keys. The state dict
is named here as dynamic_network_architectures names its parameters (including the aliases it registers twice:
``all_modules`` and the decoder's ``encoder``), independently of autoseg's key mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def arch_kwargs(dims: int = 3, features=(4, 8, 16), resenc: bool = False) -> dict:
    n = len(features)
    strides = [[1] * dims] + [[2] * dims] * (n - 1)
    kw = {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": [[3] * dims] * n,
        "strides": strides,
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    kw["n_blocks_per_stage" if resenc else "n_conv_per_stage"] = [1] + [2] * (n - 1) if resenc else [2] * n
    return kw


class _Named:
    """Collects dynamic_network_architectures' parameter names with seeded random tensors."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}

    def t(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g) * 0.2

    def conv_norm(self, prefix: str, cin: int, cout: int, kernel, bias: bool) -> None:
        """ConvDropoutNormReLU: conv + norm, and the same modules again as all_modules.0 / .1."""
        w, b = self.t(cout, cin, *kernel), self.t(cout)
        nw, nb = 1 + self.t(cout), self.t(cout)
        for conv, norm in (("conv", "norm"), ("all_modules.0", "all_modules.1")):
            self.state[f"{prefix}{conv}.weight"] = w
            if bias:
                self.state[f"{prefix}{conv}.bias"] = b
            self.state[f"{prefix}{norm}.weight"] = nw
            self.state[f"{prefix}{norm}.bias"] = nb


def dna_state_dict(kw: dict, resenc: bool, in_ch: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of PlainConvUNet / ResidualEncoderUNet(kw) with dynamic_network_architectures' key names."""
    f, k, s, n = kw["features_per_stage"], kw["kernel_sizes"], kw["strides"], kw["n_stages"]
    bias = kw["conv_bias"]
    named = _Named(seed)
    if resenc:
        named.conv_norm("encoder.stem.convs.0.", in_ch, f[0], k[0], bias)
        cin = f[0]
        for st in range(n):
            for b in range(kw["n_blocks_per_stage"][st]):
                p = f"encoder.stages.{st}.blocks.{b}."
                strided = b == 0 and any(v != 1 for v in s[st])
                named.conv_norm(p + "conv1.", cin, f[st], k[st], bias)
                named.conv_norm(p + "conv2.", f[st], f[st], k[st], bias)
                if cin != f[st]:
                    named.conv_norm(p + f"skip.{1 if strided else 0}.", cin, f[st], [1] * len(k[0]), False)
                cin = f[st]
    else:
        cin = in_ch
        for st in range(n):
            for j in range(kw["n_conv_per_stage"][st]):
                named.conv_norm(f"encoder.stages.{st}.0.convs.{j}.", cin, f[st], k[st], bias)
                cin = f[st]
    for key in list(named.state):  # the decoder keeps a reference to the encoder
        named.state["decoder." + key] = named.state[key]
    for d in range(n - 1):
        below, skip = f[n - 1 - d], f[n - 2 - d]
        named.state[f"decoder.transpconvs.{d}.weight"] = named.t(below, skip, *s[n - 1 - d])
        named.state[f"decoder.transpconvs.{d}.bias"] = named.t(skip)
        for j in range(kw["n_conv_per_stage_decoder"][d]):
            named.conv_norm(f"decoder.stages.{d}.convs.{j}.", 2 * skip if j == 0 else skip, skip, k[n - 2 - d], bias)
        named.state[f"decoder.seg_layers.{d}.weight"] = named.t(num_classes, skip, *([1] * len(k[0])))
        named.state[f"decoder.seg_layers.{d}.bias"] = named.t(num_classes)
    return named.state


def configuration(dims=3, patch=(16, 16, 16), spacing=(1.0, 1.0, 1.0), norm="ZScoreNormalization", resenc=False,
                  features=(4, 8, 16)) -> dict:  # fmt: skip
    return {
        "data_identifier": f"nnUNetPlans_{dims}d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch),
        "median_image_size_in_voxels": [float(p) for p in patch],
        "spacing": list(spacing),
        "normalization_schemes": [norm],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": RESENC if resenc else PLAIN,
            "arch_kwargs": arch_kwargs(dims, features, resenc),
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }


INTENSITY = {"0": {"max": 900.0, "mean": 100.0, "median": 95.0, "min": -50.0, "percentile_00_5": -20.0,
                   "percentile_99_5": 400.0, "std": 60.0}}  # fmt: skip


def plans(configs: dict, transpose=(0, 1, 2)) -> dict:
    backward = [list(transpose).index(i) for i in range(3)]
    return {
        "dataset_name": "Dataset999_Test",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [16, 16, 16],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": backward,
        "configurations": configs,
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": INTENSITY,
    }


DATASET = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4,
           "file_ending": ".nii.gz"}  # fmt: skip


def checkpoint_dict(state, plans_json, name, fold, mirror_axes=(0, 1, 2), dataset=DATASET) -> dict:
    """nnU-Net's checkpoint keys, with the numpy scalars its training log holds."""
    return {
        "network_weights": state,
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99, "params": [0, 1]}]},
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": [np.float64(0.5)],
            "ema_fg_dice": [np.float64(0.5)],
            "dice_per_class_or_region": [[np.float64(0.4), np.float32(0.6)]],
            "train_losses": [0.3],
            "epoch_start_timestamps": [1.0],
        },
        "_best_ema": np.float64(0.5),
        "current_epoch": 2,
        "init_args": {
            "plans": plans_json,
            "configuration": name,
            "fold": fold,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },  # fmt: skip
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": mirror_axes,
    }


def write_model_folder(root: Path, name: str = "3d_fullres", conf: dict | None = None, folds=(0,),
                       mirror_axes=(0, 1, 2), transpose=(0, 1, 2), dataset=DATASET, seed: int = 0) -> Path:  # fmt: skip
    """Write the folder and return it (``root/Dataset999_Test/nnUNetTrainer__nnUNetPlans__<name>``)."""
    conf = conf if conf is not None else configuration()
    plans_json = plans({name: conf}, transpose)
    folder = Path(root) / "Dataset999_Test" / f"nnUNetTrainer__nnUNetPlans__{name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans_json, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    fingerprint = {"foreground_intensity_properties_per_channel": INTENSITY, "spacings": [[1.0, 1.0, 1.0]],
                   "shapes_after_crop": [[16, 16, 16]], "median_relative_size_after_cropping": 1.0}  # fmt: skip
    (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    arch = conf["architecture"]
    resenc = arch["network_class_name"] == RESENC
    num_classes = len([k for k in dataset["labels"] if k != "ignore"])
    for f in folds:
        state = dna_state_dict(arch["arch_kwargs"], resenc, 1, num_classes, seed + (f if isinstance(f, int) else 9))
        (folder / f"fold_{f}").mkdir(exist_ok=True)
        ckpt = checkpoint_dict(state, plans_json, name, f, mirror_axes, dataset)
        torch.save(ckpt, folder / f"fold_{f}" / "checkpoint_final.pth")
    return folder
