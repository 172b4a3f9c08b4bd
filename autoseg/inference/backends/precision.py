"""The arithmetic precision of the network forward at inference: fp32, bf16 or fp16.

`auto` is what nnU-Net does: float16 autocast on a GPU, float32 on the CPU (so the outputs of nnU-Net's own models
match it on either device). `bf16` on the CPU runs the convolutions in bfloat16: OpenVINO compiles the network with
its bf16 precision hint (on CPUs without bf16 instructions OpenVINO stays in fp32), torch runs under bfloat16
autocast. Reduced precision changes probabilities by up to a few 1e-2 and a few voxels at label boundaries (measured
in docs/inference.md); the sliding window's weighting, accumulation and export stay float32 whatever is chosen.
"""

from __future__ import annotations

import torch
from torch import nn

from autoseg.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device, backend: str) -> str:
    """'fp32', 'bf16' or 'fp16': what `name` means for the forward of `backend` (resolved) on `device`."""
    if name not in PRECISIONS:
        raise ConfigError(f"--precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 runs on a GPU; on the CPU use bf16 (or fp32, the default)")
    if name == "bf16" and backend == "onnxruntime":
        raise ConfigError("--precision bf16: ONNX Runtime runs fp32 on the CPU; use --backend openvino or torch")
    return name


def torch_network(net: nn.Module, precision: str) -> nn.Module:
    """`net` run in `precision`: the network itself where that is what it does anyway (fp32 on the CPU), else
    wrapped (the sliding window autocasts to float16 on a GPU; fp32 there must switch that off)."""
    param = next(net.parameters(), None)
    on_cpu = param is None or param.device.type == "cpu"
    return net if precision == "fp32" and on_cpu else AutocastNetwork(net, precision)


class AutocastNetwork(nn.Module):
    """A torch network whose forward runs under autocast in `precision` ('bf16' or 'fp16'), or with autocast
    switched off ('fp32'); logits come back float32."""

    def __init__(self, net: nn.Module, precision: str):
        super().__init__()
        self.net, self.dtype = net, DTYPES.get(precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.net(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float()
