"""CPU inference backends: agreement with torch, the ONNX cache, the automatic choice and the fallback to torch."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fake_model import make_fake_model, tiny_configuration, write_case

from autoseg.cli.main import main
from autoseg.data.image_io import read_file
from autoseg.data.probabilities import load_probabilities
from autoseg.errors import ConfigError
from autoseg.inference.backends import choice
from autoseg.inference.backends.choice import backend_networks, resolve_backend
from autoseg.inference.predictor import run_predict
from autoseg.inference.sliding_window import sliding_window_logits
from autoseg.networks.build import build_network
from autoseg.resources import usable_cores
from autoseg.training.checkpoint import save_checkpoint

CPU_BACKENDS = ("onnxruntime", "openvino")


def _net_and_checkpoint(tmp_path, seed=0, ds=True):
    cfg = tiny_configuration(patch=(8, 16, 16))
    torch.manual_seed(seed)
    net = build_network(cfg.network, 1, 3, ds)  # deep supervision on: only the full-resolution output is exported
    ckpt = tmp_path / "fold_0" / "checkpoint_final.pt"
    save_checkpoint(ckpt, {"model": net.state_dict(), "epoch": 1, "fold": 0})
    return cfg, net.eval(), ckpt


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_logits_agree_with_torch_within_1e3_with_mirroring_and_batches(backend, tmp_path):
    cfg, net, ckpt = _net_and_checkpoint(tmp_path)
    (runner,) = backend_networks([net], [ckpt], 1, cfg.patch_size, backend, cfg.network)
    assert runner is not net and runner.backend == backend
    image = torch.randn(1, 13, 29, 21, generator=torch.Generator().manual_seed(1)) * 3
    kw = dict(mirror_axes=(0, 1, 2), device="cpu")
    ref = sliding_window_logits(net, image, cfg.patch_size, **kw)
    for max_batch in (8, 3, 1):  # 8 mirrored copies per pass, uneven batches, one input per pass
        got = sliding_window_logits(runner, image, cfg.patch_size, max_batch=max_batch, **kw)
        assert got.shape == ref.shape == (3, 13, 29, 21)
        diff = float((got - ref).abs().max())
        assert diff < 1e-3, diff
    assert float(ref.abs().max()) > 0.1  # the comparison is not between near-zero outputs


def test_export_is_cached_beside_the_checkpoint_and_keyed_by_its_hash(tmp_path, autoseg_log):
    cfg, net, ckpt = _net_and_checkpoint(tmp_path)
    autoseg_log.set_level(logging.INFO, logger="autoseg")
    backend_networks([net], [ckpt], 1, cfg.patch_size, "onnxruntime", cfg.network)
    (first,) = ckpt.parent.glob("checkpoint_final.onnxruntime.*.onnx")
    note = f"onnxruntime {ort.__version__}: fold_0/checkpoint_final.pt exported once, cached as {first.name}"
    assert note in autoseg_log.text
    stamp = first.stat().st_mtime_ns
    autoseg_log.clear()
    backend_networks([net], [ckpt], 1, cfg.patch_size, "onnxruntime", cfg.network)
    assert first.stat().st_mtime_ns == stamp and "exported" not in autoseg_log.text  # reused, not re-exported
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]
    # another patch (spec) or retrained weights (hash) make a new file and remove the stale one
    _, net2, _ = _net_and_checkpoint(tmp_path, seed=5)
    (runner,) = backend_networks([net2], [ckpt], 1, cfg.patch_size, "onnxruntime", cfg.network)
    (second,) = ckpt.parent.glob("checkpoint_final.onnxruntime.*.onnx")
    assert second != first
    x = torch.randn(2, 1, *cfg.patch_size)
    with torch.inference_mode():
        np.testing.assert_allclose(runner(x).numpy(), net2(x)[0].numpy(), atol=1e-3)


def test_missing_backend_falls_back_to_torch_with_a_one_line_note(tmp_path, monkeypatch, autoseg_log):
    cfg, net, ckpt = _net_and_checkpoint(tmp_path)
    monkeypatch.setitem(choice.BACKENDS, "openvino", ("autoseg.inference.backends.not_installed_xyz", "openvino"))
    with autoseg_log.at_level(logging.WARNING, logger="autoseg"):
        (runner,) = backend_networks([net], [ckpt], 1, cfg.patch_size, "openvino", cfg.network)
    assert runner is net
    notes = [r.getMessage() for r in autoseg_log.records]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith("backend openvino is not installed") and "using torch" in notes[0]
    assert "autoseg[cpu-fast]" in notes[0]
    assert not list(ckpt.parent.glob("*.onnx"))


def _fake_backend(monkeypatch, name, build):
    module = types.ModuleType(f"autoseg_test_backend_{name}")
    module.NAME, module.VERSION, module.build = name, "0.0", build
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(choice.BACKENDS, name, (module.__name__, "numpy"))
    return module


def test_backend_that_refuses_or_disagrees_falls_back_and_leaves_no_trusted_file(tmp_path, monkeypatch, autoseg_log):
    cfg, net, ckpt = _net_and_checkpoint(tmp_path)

    def refuse(path, threads):
        raise RuntimeError("unsupported operator InstanceNormalization")

    class Off(torch.nn.Module):  # a backend that runs but computes something else
        def forward(self, x):
            return net(x)[0] + 0.01

    _fake_backend(monkeypatch, "refusing", refuse)
    _fake_backend(monkeypatch, "wrong", lambda path, threads: Off())
    with autoseg_log.at_level(logging.WARNING, logger="autoseg"):
        assert backend_networks([net], [ckpt], 1, cfg.patch_size, "refusing", cfg.network) == [net]
        assert backend_networks([net], [ckpt], 1, cfg.patch_size, "wrong", cfg.network) == [net]
    first, second = (r.getMessage() for r in autoseg_log.records)
    assert first.startswith(f"backend refusing refused {ckpt} (RuntimeError: unsupported operator") and "torch" in first
    assert "logits differ from torch's by 1.00e-02 (more than 0.001)" in second
    assert not list(ckpt.parent.glob("*.wrong.*.onnx"))  # the file that failed the check is removed


def test_auto_choice_by_device_and_installed_runtimes(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cuda) == "torch"
    assert resolve_backend("torch", cpu) == "torch" and resolve_backend("onnxruntime", cpu) == "onnxruntime"
    present = {"openvino": True, "onnxruntime": True}
    monkeypatch.setattr(choice, "installed", lambda name: present[name])
    assert resolve_backend("auto", cpu) == "openvino"
    present["openvino"] = False
    assert resolve_backend("auto", cpu) == "onnxruntime"
    present["onnxruntime"] = False
    assert resolve_backend("auto", cpu) == "torch"
    with pytest.raises(ConfigError, match="--backend openvino runs on the CPU; use --device cpu"):
        resolve_backend("openvino", cuda)
    with pytest.raises(ConfigError, match="--backend 'tensorrt': use one of auto, torch, onnxruntime, openvino"):
        resolve_backend("tensorrt", cpu)


def test_predict_with_each_backend_matches_torch_and_falls_back_when_missing(workspace, tmp_path, monkeypatch):
    make_fake_model(workspace, folds=(0,))
    inp = tmp_path / "in"
    write_case(inp, "a", (9, 24, 20), (2.0, 1.0, 1.0), seed=4)
    outs = {}
    for backend in ("torch", *CPU_BACKENDS):
        out = tmp_path / backend
        run_predict(workspace, inp, out, dataset=991, folds=[0], device="cpu", backend=backend, save_probabilities=True)
        outs[backend] = (load_probabilities(out / "a.npz"), read_file(out / "a.nii.gz")[0])
    ref_probs, ref_seg = outs["torch"]
    for backend in CPU_BACKENDS:
        probs, seg = outs[backend]
        assert np.abs(probs.astype(np.float32) - ref_probs).max() < 2e-3  # float16 files
        assert np.mean(seg == ref_seg) > 0.999
    # a missing runtime: the same command runs with torch and gives torch's result exactly
    monkeypatch.setitem(choice.BACKENDS, "openvino", ("autoseg.inference.backends.not_installed_xyz", "openvino"))
    run_predict(workspace, inp, tmp_path / "fallback", dataset=991, folds=[0], device="cpu", backend="openvino",
                save_probabilities=True)  # fmt: skip
    np.testing.assert_array_equal(load_probabilities(tmp_path / "fallback" / "a.npz"), ref_probs)


def test_usable_cores_follow_the_cgroup_quota(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == usable_cores(tmp_path / "missing") >= 1
    quota.write_text("50000 100000\n")  # half a core: at least one thread
    assert usable_cores(quota) == 1


def test_cli_backend_option_reaches_the_predictor_and_caches_beside_each_fold(workspace, tmp_path, capsys):
    make_fake_model(workspace, folds=(0, 1))
    write_case(tmp_path / "in", "a", (9, 20, 20), (2.0, 1.0, 1.0), seed=2)
    argv = ["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-d", "991", "--device", "cpu"]
    assert main([*argv, "--disable-tta", "--backend", "onnxruntime", "--workspace", str(workspace.root)]) == 0
    runs = workspace.results_dataset("Dataset991_Fake") / "default" / "3d_fullres" / "default"
    for fold in (0, 1):
        assert len(list((runs / f"fold_{fold}").glob("checkpoint_final.onnxruntime.*.onnx"))) == 1
    assert not list(runs.glob("fold_*/*.openvino.*.onnx"))
    assert "backend onnxruntime" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse refuses an unknown backend, listing the choices
        main([*argv, "--backend", "tensorrt", "--workspace", str(workspace.root)])
    assert exc.value.code == 2 and "choose from 'auto', 'torch', 'onnxruntime', 'openvino'" in capsys.readouterr().err
