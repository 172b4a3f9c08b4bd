"""autoseg's networks against dynamic_network_architectures' on the same weights and input (nnU-Net's networks).

Usage (autoseg's venv; the other side runs in the venv that has nnU-Net v2)::

    python benchmarks/nnunet_network_check.py --nnunet-python /work/nnunet_venv/bin/python --work /tmp/netcheck

For PlainConvUNet and ResidualEncoderUNet, 2D and 3D (4 stages, anisotropic first stage in 3D, 2 input channels,
3 classes), the nnU-Net side builds the network from its arch_kwargs, perturbs every parameter (so norms and biases
are not at their initial values) and saves the state dict, an input and its output (tensors only). This side maps
the architecture and the state-dict keys (autoseg.networks.nnunet), loads them strictly and prints the largest
absolute difference of the outputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch


def dna_side(out: Path) -> None:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    torch.manual_seed(0)
    cases = {}
    for cls in (PlainConvUNet, ResidualEncoderUNet):
        for dims in (2, 3):
            conv, norm = (
                (torch.nn.Conv3d, torch.nn.InstanceNorm3d) if dims == 3 else (torch.nn.Conv2d, torch.nn.InstanceNorm2d)
            )
            strides = [[1] * dims] + [[2] * dims] * 3
            kernels = [[3] * dims] * 4
            if dims == 3:
                strides[1], kernels[0] = [1, 2, 2], [1, 3, 3]
            kw = dict(n_stages=4, features_per_stage=[8, 16, 32, 32], conv_op=conv, kernel_sizes=kernels,
                      strides=strides, n_conv_per_stage_decoder=[1, 2, 1], conv_bias=True, norm_op=norm,
                      norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                      nonlin_kwargs={"inplace": True})  # fmt: skip
            kw["n_blocks_per_stage" if cls is ResidualEncoderUNet else "n_conv_per_stage"] = [1, 2, 2, 2]
            net = cls(input_channels=2, num_classes=3, deep_supervision=False, **kw).eval()
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
                x = torch.randn(1, 2, *([16, 32, 32] if dims == 3 else [32, 32]))
                y = net(x)
            arch = {k: (f"{v.__module__}.{v.__name__}" if isinstance(v, type) else v) for k, v in kw.items()}
            name = f"{cls.__name__}_{dims}d"
            cases[name] = {"state": net.state_dict(), "x": x, "y": y,
                           "arch": json.dumps({"network_class_name": cls.__name__, "arch_kwargs": arch})}  # fmt: skip
    torch.save(cases, out)


def autoseg_side(path: Path) -> None:
    from autoseg.networks.build import build_network
    from autoseg.networks.nnunet import map_state_dict, network_from_nnunet
    from autoseg.planning.plans import NetworkSpec

    for name, case in torch.load(path, weights_only=True).items():
        net = build_network(NetworkSpec(*network_from_nnunet(json.loads(case["arch"]), name)), 2, 3, False).eval()
        net.load_state_dict(map_state_dict(case["state"]))
        with torch.no_grad():
            diff = float((net(case["x"]) - case["y"]).abs().max())
        print(f"{name}: max |autoseg - dynamic_network_architectures| = {diff:.3g} (output scale "
              f"{float(case['y'].abs().max()):.3g})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnunet-python", default="/work/nnunet_venv/bin/python")
    ap.add_argument("--work", default="/tmp/nnunet_network_check")
    ap.add_argument("--dna-side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = Path(args.work) / "cases.pt"
    if args.dna_side:
        dna_side(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([args.nnunet_python, __file__, "--dna-side", "--work", args.work], check=True)
    autoseg_side(path)


if __name__ == "__main__":
    sys.exit(main())
