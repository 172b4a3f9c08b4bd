"""OpenVINO backend: the exported network compiled for the CPU, fp32 or bf16 (imports openvino).

OpenVINO would run in bf16 on CPUs that support it unless told otherwise; the precision is asked for explicitly
(fp32 unless `--precision bf16`). The model
is compiled once per batch size met (static shapes run faster than a dynamic batch; a run meets one or two sizes:
the full forward batch and the last, smaller one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import torch
from torch import nn

NAME = "openvino"
VERSION = ov.__version__
HINTS = {"fp32": "f32", "bf16": "bf16"}  # autoseg's precision -> OpenVINO's inference precision hint


class OpenVinoNetwork(nn.Module):
    """A network whose forward runs an ONNX file in OpenVINO: (N, C, *patch) -> logits (N, K, *patch) float32."""

    backend = NAME

    def __init__(self, onnx_path: str | Path, threads: int, precision: str = "fp32"):
        super().__init__()
        if precision not in HINTS:
            raise ValueError(f"OpenVINO backend: precision {precision!r} not supported (fp32 or bf16)")
        self.core = ov.Core()
        self.model = self.core.read_model(str(onnx_path))
        self.config = {"INFERENCE_NUM_THREADS": max(int(threads), 1), "INFERENCE_PRECISION_HINT": HINTS[precision],
                       "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip
        self._compiled: dict[tuple[int, ...], ov.CompiledModel] = {}

    def _compiled_for(self, shape: tuple[int, ...]) -> ov.CompiledModel:
        if shape not in self._compiled:
            model = self.model.clone()
            model.reshape({0: ov.PartialShape(list(shape))})
            self._compiled[shape] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        compiled = self._compiled_for(tuple(data.shape))
        out = compiled(data)[compiled.output(0)]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))


def build(onnx_path: str | Path, threads: int, precision: str = "fp32") -> nn.Module:
    return OpenVinoNetwork(onnx_path, threads, precision)
