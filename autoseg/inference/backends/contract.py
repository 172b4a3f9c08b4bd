"""The contract of an ONNX bundle (``autoseg export --onnx``): what goes into the network and what comes out.

`onnx_contract` describes each configuration of the bundle in plain JSON, enough to run the ONNX files without
autoseg (docs/inference.md, "ONNX bundles"): input layout and dtype, the preprocessing that makes the input
(transpose, crop to nonzero, per-channel normalisation with its statistics, target spacing), the sliding window
(patch, step, Gaussian weighting, mirror axes), how folds and mirrored passes are combined (logits averaged, then
softmax over the class axis), and the labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autoseg.inference.backends.onnx_file import INPUT_NAME, OPSET, OUTPUT_NAME
from autoseg.inference.sliding_window import SIGMA_SCALE
from autoseg.planning.plans import Plans
from autoseg.preprocessing.normalize import resolve_scheme
from autoseg.serialization import to_json

CONTRACT_FILE = "onnx.json"
CONTRACT_VERSION = 1


def onnx_file(configuration: str, fold) -> str:
    """The bundle path of one fold's ONNX network."""
    return f"models/{configuration}/fold_{fold}/network.onnx"


def onnx_contract(
    plans: Plans, models: Mapping[str, Sequence], labels: Mapping, intensity, in_channels: Mapping[str, int],
    classes: int, activation: str = "softmax",
) -> dict:  # fmt: skip
    """The contract (JSON-ready dict) of `models` (configuration -> folds); `intensity`: per-channel foreground
    statistics (plans' or fingerprint's; None when unknown), `in_channels`: network input channels per configuration;
    `classes`: network outputs; `activation`: 'softmax' over the classes, or 'sigmoid' per region."""
    configurations = {}
    for name, folds in models.items():
        cfg = plans.configuration(name)
        norm = []
        for i, scheme in enumerate(cfg.normalization):
            entry = {"scheme": resolve_scheme(scheme), "use_mask_for_norm": bool(cfg.use_mask_for_norm[i])}
            if cfg.normalization_kwargs:
                entry["kwargs"] = dict(cfg.normalization_kwargs[i])
            if entry["scheme"] == "ct" and intensity is not None:
                entry["intensity"] = to_json(intensity[i])
            norm.append(entry)
        patch = [int(p) for p in cfg.patch_size]
        configurations[name] = {
            "folds": {str(f): onnx_file(name, f) for f in folds},
            "input": {"name": INPUT_NAME, "layout": "N, C, *patch (batch dynamic)", "dtype": "float32",
                      "channels": int(in_channels[name]), "image_channels": len(cfg.normalization),
                      "patch_size": patch},
            "output": {"name": OUTPUT_NAME, "layout": "N, K, *patch", "dtype": "float32",
                       "classes": int(classes), "meaning": f"logits ({activation} not applied)"},
            "preprocessing": {"transpose": list(plans.transpose), "crop_to_nonzero": True,
                              "spacing": [float(s) for s in cfg.spacing], "normalization": norm,
                              "resampling": to_json(cfg.resampling), "previous_stage": cfg.previous_stage},
            "sliding_window": {"step": 0.5, "gaussian_sigma_scale": SIGMA_SCALE,
                               "mirror_axes": list(range(len(patch))), "pad_value": 0.0},
            "activation": activation,
            "combine": "mean of the logits over tiles (Gaussian-weighted), mirrored passes and folds; then the "
                       "activation (softmax over K, or a sigmoid per region); label = argmax (ties: the lower label)",
        }  # fmt: skip
    return {
        "format": "autoseg-onnx", "version": CONTRACT_VERSION, "opset": OPSET, "labels": dict(labels),
        "configurations": configurations,
    }  # fmt: skip
