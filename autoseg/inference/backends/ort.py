"""ONNX Runtime backend: the exported network in an InferenceSession on the CPU (imports onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from autoseg.inference.backends.onnx_file import INPUT_NAME

NAME = "onnxruntime"
VERSION = ort.__version__


class OnnxRuntimeNetwork(nn.Module):
    """A network whose forward runs an ONNX file in ONNX Runtime: (N, C, *patch) -> logits (N, K, *patch) float32."""

    backend = NAME

    def __init__(self, onnx_path: str | Path, threads: int):
        super().__init__()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(int(threads), 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {INPUT_NAME: data})[0])


def build(onnx_path: str | Path, threads: int, precision: str = "fp32") -> nn.Module:
    if precision != "fp32":
        raise ValueError(f"ONNX Runtime backend: precision {precision!r} not supported on the CPU (fp32 only)")
    return OnnxRuntimeNetwork(onnx_path, threads)
