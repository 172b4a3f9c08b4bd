"""Which backend runs the sliding window's network forward, and the fallback to torch.

A backend is a module registered here by import path; it imports its runtime at the top and exposes `NAME`,
`VERSION` and ``build(onnx_path, threads, precision="fp32") -> nn.Module`` (a precision it cannot run is a
ValueError, hence a fallback). Loading it is importing it: a runtime that is not installed
is an ImportError, and the fold runs with torch after a one-line note. A backend that refuses the model (export,
compilation or a first forward fails, or its logits differ from torch's by more than `TOLERANCE` on a random input)
falls back the same way. The check runs once, when the ONNX file is exported; the cached file is trusted after.

`auto` is torch on a GPU; on the CPU the first installed of `AUTO_ORDER` (ordered by the speeds measured in
docs/inference.md: OpenVINO was the fastest on every network measured), else torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from autoseg.errors import ConfigError
from autoseg.inference.backends.onnx_file import cached_onnx
from autoseg.inference.backends.precision import torch_network
from autoseg.log import logger
from autoseg.resources import usable_cores

BACKENDS = {
    "openvino": ("autoseg.inference.backends.ov", "openvino"),
    "onnxruntime": ("autoseg.inference.backends.ort", "onnxruntime"),
}  # name -> (backend module, the runtime package it needs)
CHOICES = ("auto", "torch", *sorted(BACKENDS))
AUTO_ORDER = ("openvino", "onnxruntime")
TOLERANCE = 1e-3  # max abs logit difference to torch on the export check
INSTALL_HINT = 'pip install "autoseg[cpu-fast]"'


def installed(name: str) -> bool:
    """Whether the runtime package of backend `name` can be found (without importing it)."""
    return importlib.util.find_spec(BACKENDS[name][1]) is not None


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend `name` ('auto', 'torch' or a registered one) means on `device`."""
    if name not in CHOICES:
        raise ConfigError(f"--backend {name!r}: use one of {', '.join(CHOICES)}")
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        return next((b for b in AUTO_ORDER if installed(b)), "torch")
    if name != "torch" and device.type != "cpu":
        raise ConfigError(f"--backend {name} runs on the CPU; use --device cpu with it, or --backend torch on {device}")
    return name


def load_backend(name: str) -> ModuleType:
    """The backend's module (an ImportError when its runtime is not installed)."""
    return importlib.import_module(BACKENDS[name][0])


def backend_networks(
    nets: Sequence[nn.Module], checkpoints: Sequence[Path], in_channels: int, patch: Sequence[int], backend: str,
    network_spec: object, precision: str = "fp32",
) -> list[nn.Module]:  # fmt: skip
    """The folds' networks run by `backend` (already resolved) in `precision` (resolved, see
    `backends.precision`); each one falls back to its torch network, with a one-line note, when the backend is
    missing or refuses it."""

    if backend == "torch":
        return [torch_network(n, precision) for n in nets]
    try:
        module = load_backend(backend)
    except ImportError as exc:
        logger.warning(f"backend {backend} is not installed ({exc}); using torch. Install it with: {INSTALL_HINT}")
        return [torch_network(n, precision) for n in nets]
    out = []
    for net, ckpt in zip(nets, checkpoints):
        try:
            out.append(_build(module, net, Path(ckpt), in_channels, patch, network_spec, precision))
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party runtime means: run with torch
            logger.warning(f"backend {backend} refused {ckpt} ({type(exc).__name__}: {str(exc)[:200]}); using torch")
            out.append(torch_network(net, precision))
    return out


def _build(module: ModuleType, net: nn.Module, ckpt: Path, in_channels, patch, spec, precision: str) -> nn.Module:
    """The backend's runner of `net` from its cached ONNX file; a fresh file is checked against torch in fp32 first
    (a reduced-precision runner is built after the check: its differences are the precision's, not the export's)."""
    path, fresh = cached_onnx(net.cpu(), ckpt, in_channels, patch, module.NAME, module.VERSION, spec)
    runner = module.build(path, usable_cores())
    if fresh:
        try:
            check_agreement(net, runner, in_channels, patch)
        except Exception:
            path.unlink(missing_ok=True)  # a file that failed the check is not trusted on the next run
            raise
        where = f"{ckpt.parent.name}/{ckpt.name}"
        logger.info(f"{module.NAME} {module.VERSION}: {where} exported once, cached as {path.name}")
    return runner if precision == "fp32" else module.build(path, usable_cores(), precision)


def check_agreement(net: nn.Module, runner: nn.Module, in_channels: int, patch: Sequence[int], batch: int = 2) -> float:
    """Max abs logit difference of `runner` to `net` on a seeded random batch; a ValueError above `TOLERANCE`."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, int(in_channels), *(int(p) for p in patch)), generator=gen)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            ref = net(x)
            ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).float()
            diff = float((runner(x) - ref).abs().max())
    finally:
        net.train(was_training)
    if not diff <= TOLERANCE:
        raise ValueError(f"logits differ from torch's by {diff:.2e} (more than {TOLERANCE})")
    return diff
