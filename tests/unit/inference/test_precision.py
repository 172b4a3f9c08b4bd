"""Precision of the inference forward: the automatic choice, bf16 on the CPU (torch and OpenVINO), refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_model import make_fake_model, tiny_configuration, write_case

from autoseg.cli.main import main
from autoseg.data.image_io import read_file
from autoseg.data.probabilities import load_probabilities
from autoseg.errors import ConfigError
from autoseg.inference.backends.choice import backend_networks
from autoseg.inference.backends.precision import AutocastNetwork, resolve_precision, torch_network
from autoseg.inference.predictor import run_predict
from autoseg.networks.build import build_network
from autoseg.training.checkpoint import save_checkpoint

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_fp16_on_a_gpu_and_fp32_on_the_cpu_and_impossible_choices_are_refused():
    assert resolve_precision("auto", CPU, "openvino") == "fp32" and resolve_precision("auto", CUDA, "torch") == "fp16"
    assert resolve_precision("bf16", CPU, "openvino") == "bf16" == resolve_precision("bf16", CUDA, "torch")
    assert resolve_precision("fp32", CUDA, "torch") == "fp32"
    with pytest.raises(ConfigError, match="--precision fp16 runs on a GPU; on the CPU use bf16"):
        resolve_precision("fp16", CPU, "torch")
    with pytest.raises(ConfigError, match="--precision bf16: ONNX Runtime runs fp32 on the CPU"):
        resolve_precision("bf16", CPU, "onnxruntime")
    with pytest.raises(ConfigError, match="--precision 'int8': use one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", CPU, "torch")


def _net_and_checkpoint(tmp_path):
    cfg = tiny_configuration(patch=(8, 16, 16))
    torch.manual_seed(0)
    net = build_network(cfg.network, 1, 3, False).eval()
    ckpt = tmp_path / "fold_0" / "checkpoint_final.pt"
    save_checkpoint(ckpt, {"model": net.state_dict(), "epoch": 1, "fold": 0})
    return cfg, net, ckpt


def test_bf16_runners_compute_in_bf16_and_stay_close_to_fp32(tmp_path):
    cfg, net, ckpt = _net_and_checkpoint(tmp_path)
    x = torch.randn(2, 1, *cfg.patch_size, generator=torch.Generator().manual_seed(3)) * 2
    with torch.inference_mode():
        ref = net(x)
        (wrapped,) = backend_networks([net], [ckpt], 1, cfg.patch_size, "torch", cfg.network, "bf16")
        assert isinstance(wrapped, AutocastNetwork) and wrapped.net is net
        got = wrapped(x)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        diff = float((got - ref).abs().max())
        assert 0 < diff < 0.05 * float(ref.abs().max())  # really bfloat16 arithmetic, still the same network
        (ov_runner,) = backend_networks([net], [ckpt], 1, cfg.patch_size, "openvino", cfg.network, "bf16")
        assert ov_runner.backend == "openvino" and ov_runner.config["INFERENCE_PRECISION_HINT"] == "bf16"
        assert float((ov_runner(x) - ref).abs().max()) < 0.05 * float(ref.abs().max())
        (fp32,) = backend_networks([net], [ckpt], 1, cfg.patch_size, "torch", cfg.network, "fp32")
        assert fp32 is net  # fp32 with torch on the CPU: the network itself, untouched
        off = AutocastNetwork(net, "fp32")  # what fp32 means off the CPU: autocast switched off, same numbers
        assert off.dtype is None and torch.equal(off(x), ref)
    elsewhere = torch_network(build_network(cfg.network, 1, 3, False).to("meta"), "fp32")  # a network not on the CPU
    assert isinstance(elsewhere, AutocastNetwork) and elsewhere.dtype is None


def test_predict_in_bf16_agrees_with_fp32_and_the_cli_passes_the_choice(workspace, tmp_path, capsys):
    make_fake_model(workspace, folds=(0,))
    inp = tmp_path / "in"
    write_case(inp, "a", (9, 24, 20), (2.0, 1.0, 1.0), seed=4)
    outs = {}
    for backend, precision in (("torch", "fp32"), ("torch", "bf16"), ("openvino", "bf16")):
        out = tmp_path / f"{backend}_{precision}"
        run_predict(workspace, inp, out, dataset=991, folds=[0], device="cpu", backend=backend, precision=precision,
                    save_probabilities=True)  # fmt: skip
        outs[(backend, precision)] = (
            load_probabilities(out / "a.npz").astype(np.float32),
            read_file(out / "a.nii.gz")[0],
        )
    ref_p, ref_s = outs[("torch", "fp32")]
    for key in (("torch", "bf16"), ("openvino", "bf16")):
        probs, seg = outs[key]
        assert probs.shape == ref_p.shape and np.abs(probs - ref_p).max() < 0.05
        assert np.mean(seg == ref_s) > 0.99
    assert np.abs(outs[("torch", "bf16")][0] - ref_p).max() > 0  # autocast really ran
    argv = ["predict", "-i", str(inp), "-o", str(tmp_path / "cli"), "-d", "991", "-f", "0", "--device", "cpu"]
    assert main([*argv, "--backend", "torch", "--precision", "bf16", "--workspace", str(workspace.root)]) == 0
    assert "backend torch bf16" in capsys.readouterr().err
    assert main([*argv, "--precision", "fp16", "--workspace", str(workspace.root)]) == 1
    assert "--precision fp16 runs on a GPU" in capsys.readouterr().err
