"""The network as an ONNX file: export (full-resolution output only, dynamic batch), and the cache beside a checkpoint.

`export_onnx` writes ``torch.onnx.export(..., opset_version=17, dynamo=False)`` of the network's first output (deep
supervision heads are left out) with input ``image`` (N, C, *patch) float32 and output ``logits`` (N, K, *patch),
N dynamic so that the mirrored copies of test-time augmentation share one call. `cached_onnx` keeps one file per
checkpoint and backend, named by a key over the checkpoint's SHA-256, the backend and its version, torch's version,
the opset and the input spec (channels, patch, dtype, network spec): a retrained fold, a new backend release or other
plans make a new file; the older files of that checkpoint and backend are removed when the new one is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from autoseg.log import logger
from autoseg.serialization import atomic_target

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"
CACHE_FALLBACK = Path(tempfile.gettempdir()) / f"autoseg-onnx-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _private(folder: Path) -> bool:
    """Whether `folder` is (now) this user's own, closed to others: a file found in a shared temporary folder is
    never trusted, since another user could have put it there."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except OSError:
        return False
    return not hasattr(os, "getuid") or (st.st_uid == os.getuid() and st.st_mode & 0o077 == 0)


class FullResolution(nn.Module):
    """The wrapped network's first (full-resolution) output: what the sliding window uses."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def export_onnx(net: nn.Module, in_channels: int, patch: Sequence[int], path: str | Path) -> Path:
    """Write `net` (on the CPU, eval mode) as an ONNX file at `path` (atomically); returns `path`."""
    path = Path(path)
    was_training = net.training
    net.eval()
    dummy = torch.zeros((1, int(in_channels), *(int(p) for p in patch)), dtype=torch.float32)
    try:
        with torch.no_grad(), warnings.catch_warnings(), atomic_target(path, suffix=".onnx.tmp") as tmp:
            # tracing notes on shape arithmetic, and instance norm exported with input statistics (as it computes)
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)  # the TorchScript exporter, as asked
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                FullResolution(net), (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET, dynamo=False,
            )  # fmt: skip
    finally:
        net.train(was_training)
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(checkpoint_sha: str, backend: str, version: str, spec: object) -> str:
    """16 hex characters over everything the exported file depends on."""
    parts = {"checkpoint": checkpoint_sha, "backend": backend, "version": version, "torch": torch.__version__}
    parts.update(opset=OPSET, spec=spec)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_onnx(
    net: nn.Module, checkpoint: Path, in_channels: int, patch: Sequence[int], backend: str, version: str,
    network_spec: object,
) -> tuple[Path, bool]:  # fmt: skip
    """(the ONNX file of `net` for `backend`, whether it was just exported) beside `checkpoint`.

    Named ``<checkpoint stem>.<backend>.<key>.onnx``; a folder that cannot be written (an installed bundle on a
    read-only disk) uses a per-user temporary cache folder instead.
    """
    spec = {"in_channels": int(in_channels), "patch": [int(p) for p in patch], "dtype": "float32", "net": network_spec}
    key = cache_key(file_sha256(checkpoint), backend, version, spec)
    name = f"{checkpoint.stem}.{backend}.{key}.onnx"
    last: OSError | None = None
    for folder in (checkpoint.parent, CACHE_FALLBACK):
        if folder == CACHE_FALLBACK and not _private(folder):
            continue
        target = folder / name
        if target.is_file():
            return target, False
        try:
            export_onnx(net, in_channels, patch, target)
        except OSError as exc:
            logger.debug(f"{target}: cannot write the ONNX cache ({exc}); trying {CACHE_FALLBACK}")
            last = exc
            continue
        for old in folder.glob(f"{checkpoint.stem}.{backend}.*.onnx"):
            if old != target:
                old.unlink(missing_ok=True)
        return target, True
    raise OSError(
        f"{checkpoint}: no writable folder for the ONNX export (tried {checkpoint.parent}, {CACHE_FALLBACK})"
    ) from last
