"""Helper for the network tests: small network-spec parameter dicts in the planner's format (not a test module)."""

from __future__ import annotations


def make_params(
    features=(8, 16, 32),
    kernels=None,
    strides=None,
    dims: int = 3,
    n_conv=2,
    n_conv_decoder=2,
    conv_bias: bool = True,
) -> dict:
    n = len(features)
    kernels = kernels or [[3] * dims] * n
    strides = strides or [[1] * dims] + [[2] * dims] * (n - 1)
    return {
        "n_stages": n,
        "features_per_stage": list(features),
        "kernel_sizes": [list(k) for k in kernels],
        "strides": [list(s) for s in strides],
        "n_conv_per_stage": [n_conv] * n if isinstance(n_conv, int) else list(n_conv),
        "n_conv_per_stage_decoder": [n_conv_decoder] * (n - 1),
        "conv_bias": conv_bias,
        "norm": "instance",
        "nonlin": "leaky_relu",
    }
