"""`autoseg export --onnx`: the bundle's ONNX networks, run by ONNX Runtime alone following onnx.json, reproduce
autoseg's probabilities."""

from __future__ import annotations

import itertools
import json
import math
import zipfile

import numpy as np
import onnxruntime as ort
from fake_model import make_fake_model, write_case

from autoseg.bundle import install_bundle
from autoseg.cli.main import main
from autoseg.data.image_io import read_image
from autoseg.inference.predictor import Predictor
from autoseg.inference.source import load_bundle, resolve_source
from autoseg.preprocessing.preprocess import preprocess_case
from autoseg.workspace import Workspace


def _gaussian(patch, sigma_scale):
    g = np.ones(())
    for p in patch:
        x = np.arange(p) - (p - 1) / 2
        g = np.multiply.outer(g, np.exp(-0.5 * (x / (p * sigma_scale)) ** 2))
    return g / g.max()


def contract_probabilities(data: np.ndarray, cfg: dict, folder) -> np.ndarray:
    """Softmax probabilities of a preprocessed case (C, *shape) by the contract alone: numpy + ONNX Runtime."""
    patch, win = cfg["input"]["patch_size"], cfg["sliding_window"]
    starts = []
    for size, p in zip(data.shape[1:], patch):
        n = math.ceil((size - p) / (p * win["step"])) + 1
        starts.append([round(i * (size - p) / (n - 1)) if n > 1 else 0 for i in range(n)])
    gauss = _gaussian(patch, win["gaussian_sigma_scale"])
    axes = win["mirror_axes"]
    flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    fold_logits = []
    for rel in cfg["folds"].values():
        session = ort.InferenceSession(str(folder / rel), providers=["CPUExecutionProvider"])
        logits = np.zeros((cfg["output"]["classes"], *data.shape[1:]))
        weight = np.zeros(data.shape[1:])
        for corner in itertools.product(*starts):
            sl = tuple(slice(s, s + p) for s, p in zip(corner, patch))
            tile = data[(slice(None), *sl)][None].astype(np.float32)
            batch = np.concatenate([np.flip(tile, [a + 2 for a in f]) for f in flips])  # one call: dynamic batch
            out = session.run([cfg["output"]["name"]], {cfg["input"]["name"]: np.ascontiguousarray(batch)})[0]
            mean = sum(np.flip(out[i : i + 1], [a + 2 for a in f]) for i, f in enumerate(flips))[0] / len(flips)
            logits[(slice(None), *sl)] += mean * gauss
            weight[sl] += gauss
        fold_logits.append(logits / weight)
    z = np.mean(fold_logits, axis=0)
    e = np.exp(z - z.max(0))
    return e / e.sum(0)


def test_exported_onnx_reproduces_autoseg_probabilities_without_autoseg_network_code(workspace, tmp_path):
    make_fake_model(workspace, folds=(0, 1))
    zip_path = tmp_path / "model.zip"
    assert main(["export", "--workspace", str(workspace.root), "-d", "991", "-o", str(zip_path), "--onnx"]) == 0
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
    contract = json.loads((folder / "onnx.json").read_text())
    cfg = contract["configurations"]["3d_fullres"]
    assert contract["opset"] == 17 and contract["labels"] == {"background": 0, "organ1": 1, "organ2": 2}
    assert cfg["input"]["patch_size"] == [8, 16, 16] and cfg["input"]["channels"] == 1
    assert cfg["output"]["classes"] == 3 and cfg["activation"] == "softmax"
    assert cfg["preprocessing"]["spacing"] == [2.0, 1.0, 1.0]
    assert cfg["preprocessing"]["normalization"] == [{"scheme": "zscore", "use_mask_for_norm": False}]
    assert set(cfg["folds"]) == {"0", "1"} and all((folder / p).is_file() for p in cfg["folds"].values())

    write_case(tmp_path / "in", "c", (9, 30, 25), (2.5, 0.8, 1.1), seed=7)
    image, geometry = read_image([tmp_path / "in" / "c_0000.nii.gz"])
    src = resolve_source(workspace, 991)
    case = preprocess_case(image, None, geometry, src.plans, src.plans.configuration("3d_fullres"), src.fingerprint)
    assert all(s > p for s, p in zip(case.data.shape[1:], (8, 16, 16)))  # several tiles on every axis
    expected = Predictor(src, "3d_fullres", [0, 1], "cpu", tta=True).preprocessed_output(case.data, case.properties)[0]
    got = contract_probabilities(case.data, cfg, folder)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(expected - expected.mean(0)).max() > 0.05  # the classes differ: not a comparison of constants

    installed = install_bundle(Workspace.at(tmp_path / "other"), zip_path)  # the ONNX files do not disturb install
    assert load_bundle(installed).weights["3d_fullres"].keys() == {0, 1}
