"""nnU-Net architectures -> autoseg networks: arch_kwargs mapping, old plans format, key names, refusals."""

from __future__ import annotations

import pytest
import torch
from nnunet_folder import PLAIN, RESENC, arch_kwargs, dna_state_dict

from autoseg.errors import PlansError
from autoseg.networks.build import build_network
from autoseg.networks.nnunet import architecture_of, map_state_dict, network_from_nnunet
from autoseg.planning.plans import NetworkSpec


def _net(arch: dict, in_ch=1, classes=3):
    return build_network(NetworkSpec(*network_from_nnunet(arch, "test")), in_ch, classes, False).eval()


@pytest.mark.parametrize("resenc", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
def test_state_dict_of_dynamic_network_architectures_loads_strictly(resenc, dims):
    kw = arch_kwargs(dims, (4, 8, 16), resenc)
    net = _net({"network_class_name": RESENC if resenc else PLAIN, "arch_kwargs": kw})
    dna = dna_state_dict(kw, resenc, 1, 3, seed=3)
    mapped = map_state_dict(dna)
    assert not [k for k in mapped if "all_modules" in k or k.startswith("decoder.encoder.")]  # aliases dropped
    net.load_state_dict(mapped, strict=True)  # every parameter named, none left over
    sd = net.state_dict()
    if resenc:
        assert torch.equal(sd["encoder.stem.conv.weight"], dna["encoder.stem.convs.0.conv.weight"])
        assert torch.equal(sd["encoder.stages.1.1.conv2.norm.bias"], dna["encoder.stages.1.blocks.1.conv2.norm.bias"])
        shortcut = dna["encoder.stages.1.blocks.0.skip.1.conv.weight"]
        assert torch.equal(sd["encoder.stages.1.0.shortcut.1.conv.weight"], shortcut)
    else:
        assert torch.equal(sd["encoder.stages.1.1.conv.weight"], dna["encoder.stages.1.0.convs.1.conv.weight"])
    assert torch.equal(sd["decoder.upsample.0.weight"], dna["decoder.transpconvs.0.weight"])
    assert torch.equal(sd["decoder.stages.1.0.norm.weight"], dna["decoder.stages.1.convs.0.norm.weight"])
    assert torch.equal(sd["decoder.seg_heads.1.bias"], dna["decoder.seg_layers.1.bias"])
    x = torch.randn(1, 1, *([16] * dims))
    with torch.no_grad():
        assert net(x).shape == (1, 3, *([16] * dims))


def test_params_follow_arch_kwargs():
    kw = arch_kwargs(3, (4, 8, 16), resenc=True)
    kw["strides"] = [1, [1, 2, 2], 2]  # nnU-Net allows scalars per stage
    name, params = network_from_nnunet({"network_class_name": RESENC, "arch_kwargs": kw}, "x")
    assert name == "resenc_unet"
    assert params["n_conv_per_stage"] == [1, 2, 2]  # n_blocks_per_stage
    assert params["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    assert (params["norm"], params["nonlin"], params["conv_bias"]) == ("instance", "leaky_relu", True)
    name, params = network_from_nnunet({"network_class_name": PLAIN, "arch_kwargs": arch_kwargs(2)}, "x")
    assert name == "unet" and params["kernel_sizes"] == [[3, 3]] * 3 and params["n_conv_per_stage_decoder"] == [1, 1]


def test_pre_2_4_plans_format_gives_the_same_network():
    old = {
        "UNet_class_name": "PlainConvUNet",
        "UNet_base_num_features": 4,
        "unet_max_num_features": 12,
        "n_conv_per_stage_encoder": [2, 2, 2],
        "n_conv_per_stage_decoder": [1, 1],
        "num_pool_per_axis": [2, 2, 2],
        "conv_kernel_sizes": [[3, 3, 3]] * 3,
        "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    }
    new = arch_kwargs(3, (4, 8, 12))
    assert network_from_nnunet(architecture_of(old, "x"), "x") == network_from_nnunet(
        {"network_class_name": PLAIN, "arch_kwargs": new}, "x"
    )


def test_unknown_architecture_is_named():
    arch = {"network_class_name": "dynamic_network_architectures.architectures.primus.Primus", "arch_kwargs": {}}
    with pytest.raises(PlansError, match=r"plans.json: network class '.*Primus' is not supported"):
        network_from_nnunet(arch, "plans.json")


def test_settings_autoseg_does_not_reproduce_are_all_named():
    kw = arch_kwargs(3)
    kw.update(dropout_op="torch.nn.Dropout3d", norm_op_kwargs={"eps": 1e-3, "affine": True})
    kw["nonlin_kwargs"] = {"negative_slope": 0.2}
    with pytest.raises(PlansError) as err:
        network_from_nnunet({"network_class_name": PLAIN, "arch_kwargs": kw}, "cfg")
    for part in ("dropout_op 'torch.nn.Dropout3d'", "norm_op_kwargs", "'negative_slope': 0.2"):
        assert part in str(err.value)


def test_unmapped_key_is_reported_by_strict_loading():
    kw = arch_kwargs(3)
    state = dna_state_dict(kw, False, 1, 3)
    state["encoder.stages.0.1.convs.0.conv.weight"] = torch.zeros(1)  # a pooling encoder would put convs at .1
    net = _net({"network_class_name": PLAIN, "arch_kwargs": kw})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        net.load_state_dict(map_state_dict(state))
