"""Network registry and builder: plans' NetworkSpec -> torch module.

Built-in names: "unet" (plain U-Net, like nnU-Net's PlainConvUNet) and "resenc_unet" (residual encoder, like
nnU-Net's ResidualEncoderUNet). The dimensionality (2D or 3D) follows len(spec.params["kernel_sizes"][0]).

Adding your own network (no change to autoseg needed)::

    # my_nets.py
    from torch import nn
    from autoseg.networks.build import networks

    @networks.register("my_net")
    def build_my_net(spec, in_channels: int, num_classes: int, deep_supervision: bool) -> nn.Module:
        return MyNet(in_channels, num_classes, deep_supervision=deep_supervision, **spec.params)

The module must have a boolean attribute `deep_supervision` (the trainer switches it off for inference) and its
forward must return a list of logits, highest resolution first, while it is True (one per deep-supervision scale
the data loader produces, i.e. one per decoder resolution: n_stages-1 for the plans' strides), else one tensor.
For the planner to size "my_net" (patch and batch size for a GPU budget), register its memory estimate in the same
module, with the reference values it was calibrated with (its own `MemoryReference`, or a built-in's name)::

    from autoseg.networks.memory import register_memory_estimate

    @register_memory_estimate("my_net", reference="unet")
    def my_net_voxels(params, patch_size, in_channels, num_classes, deep_supervision=True) -> int:
        ...  # feature-map voxels of one sample's forward pass

then plan with it (``plan_dataset(fingerprint, network="my_net")``), or set a configuration's network name in
plans.json to "my_net" (its params are passed through as spec.params: they are the network's keyword arguments).
Pass `--plugin my_nets` (or AUTOSEG_PLUGINS=my_nets) so the module is imported; plans record the plugins imported
when they were made and import them again when loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from autoseg.errors import ConfigError
from autoseg.networks.blocks import parse_unet_params
from autoseg.networks.resenc import ResEncUNet
from autoseg.networks.unet import PlainUNet
from autoseg.registry import Registry

NetworkBuilder = Callable[[Any, int, int, bool], nn.Module]

networks: Registry[NetworkBuilder] = Registry("network")


def build_network(spec, in_channels: int, num_classes: int, deep_supervision: bool = True) -> nn.Module:
    """Build the network named by `spec.name` (a plans NetworkSpec) for `in_channels` inputs and `num_classes` outputs.

    An unknown name raises ConfigError listing the registered ones.
    """
    builder = networks.get(spec.name)
    model = builder(spec, in_channels, num_classes, deep_supervision)
    if not isinstance(model, nn.Module) or not hasattr(model, "deep_supervision"):
        raise ConfigError(
            f"network builder {spec.name!r} must return a torch.nn.Module with a `deep_supervision` attribute, "
            f"got {type(model).__name__}"
        )
    return model


@networks.register("unet")
def build_plain_unet(spec, in_channels: int, num_classes: int, deep_supervision: bool = True) -> nn.Module:
    return PlainUNet(parse_unet_params(spec.params, spec.name), in_channels, num_classes, deep_supervision)


@networks.register("resenc_unet")
def build_resenc_unet(spec, in_channels: int, num_classes: int, deep_supervision: bool = True) -> nn.Module:
    return ResEncUNet(parse_unet_params(spec.params, spec.name), in_channels, num_classes, deep_supervision)
