"""Fine-tuning: initialise a new network from a pretrained one (``autoseg train --pretrained PATH``).

PATH is a checkpoint (``checkpoint_*.pt``), a weights file (a bundle's ``weights.pt``), a run folder (``fold_K``: its
``checkpoint_final.pt``; a trainer folder holding ``fold_*``: the lowest finished fold) or an installed bundle folder
(the weights of the configuration being trained, else of its only configuration; fold ``all`` if present, else the
lowest fold). Files are read weights-only: no code is ever unpickled.

Every tensor of the new network whose name and shape match a pretrained one is copied. The others keep the new
network's own (seeded) initialisation, and the report says why:

- segmentation heads: a tensor that differs only in its output channels, which equal the new number of classes, is a
  head for other classes: re-initialised;
- first convolution: when the number of input channels differs, its weight (out, C_src, k...) is adapted to
  (out, C_new, k...): the mean over the source channels, repeated for every new channel and scaled by C_src / C_new,
  so a voxel whose channels all hold the same value gets the same response as before;
- any other tensor whose shape differs is re-initialised; pretrained tensors the new network lacks are unused.

Nothing in common (no tensor loaded or adapted) is an error naming the file and both networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from autoseg.errors import ConfigError
from autoseg.inference.source import BUNDLE_FILE, fold_key, load_bundle
from autoseg.networks.weights import load_weights
from autoseg.workspace import RunFolder

HINT = "give a checkpoint file, a run folder (fold_K) or an installed bundle folder"


@dataclass(frozen=True)
class TransferReport:
    """What happened to each tensor of the new network (names in state-dict order)."""

    source: Path
    loaded: tuple[str, ...]
    adapted: tuple[tuple[str, str], ...]  # (name, how)
    reinitialised: tuple[tuple[str, str], ...]  # (name, why)
    unused: tuple[str, ...]  # pretrained tensors the new network has no place for

    def lines(self) -> list[str]:
        total = len(self.loaded) + len(self.adapted) + len(self.reinitialised)
        out = [f"pretrained weights from {self.source}: {len(self.loaded)} of {total} tensors loaded"]
        out += [f"  adapted {name}: {how}" for name, how in self.adapted]
        out += [f"  re-initialised {name}: {why}" for name, why in self.reinitialised]
        if self.unused:
            shown = ", ".join(self.unused[:6]) + (", ..." if len(self.unused) > 6 else "")
            out.append(f"  unused pretrained tensors ({len(self.unused)}): {shown}")
        return out


# ---- where the weights are ---------------------------------------------------------------------------------------
def _fold_sort_key(key: int | str) -> tuple[int, str]:
    return (0, "") if key == "all" else (1, f"{key:>6}" if isinstance(key, int) else str(key))


def resolve_pretrained(path: str | Path, configuration: str) -> Path:
    """The weights file that `path` names (see the module docstring); ConfigError naming `path` if there is none."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ConfigError(f"{p}: --pretrained not found; {HINT}")
    if (p / BUNDLE_FILE).is_file():
        weights = load_bundle(p).weights
        by_fold = weights.get(configuration) or (next(iter(weights.values())) if len(weights) == 1 else None)
        if not by_fold:
            raise ConfigError(
                f"{p}: the bundle has no weights of configuration {configuration!r} and several others "
                f"({', '.join(weights)}); give the weights file models/<configuration>/fold_K/weights.pt"
            )
        return by_fold[min(by_fold, key=_fold_sort_key)]
    if RunFolder(p).final.is_file():
        return RunFolder(p).final
    finished = [d for d in p.glob("fold_*") if RunFolder(d).final.is_file()]
    finished.sort(key=lambda d: _fold_sort_key(fold_key(d)))  # fold_all, then fold_0, fold_1, ..., fold_10
    if finished:
        return RunFolder(finished[0]).final
    raise ConfigError(f"{p}: no checkpoint_final.pt, no finished fold_* and no {BUNDLE_FILE}; {HINT}")


# ---- matching --------------------------------------------------------------------------------------------------------
def first_conv_weight(model: torch.nn.Module) -> str | None:
    """State-dict name of the weight of the network's first convolution (the one that sees the input channels)."""
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            return f"{name}.weight" if name else "weight"
    return None


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(out, C_src, k...) -> (out, in_channels, k...): source-channel mean, repeated, scaled by C_src / in_channels."""
    mean = weight.mean(dim=1, keepdim=True)
    shape = [1] * weight.dim()
    shape[1] = in_channels
    return (mean * (weight.shape[1] / in_channels)).repeat(*shape).contiguous()


def _is_head(src: torch.Size, dst: torch.Size, num_classes: int) -> bool:
    return len(src) == len(dst) and src[1:] == dst[1:] and src[0] != dst[0] and dst[0] == num_classes


def _describe(state: dict[str, torch.Tensor]) -> str:
    if not state:
        return "no tensors"
    first = next(iter(state))
    return f"{len(state)} tensors, first {first} {list(state[first].shape)}"


def transfer_weights(
    model: torch.nn.Module, pretrained: dict[str, torch.Tensor], num_classes: int, source: Path, target: str = ""
) -> TransferReport:
    """Copy every matching tensor of `pretrained` into `model` (in place) and report; see the module docstring.

    `target` names the new network in the error raised when nothing matches."""
    pretrained = {k.removeprefix("module."): v for k, v in pretrained.items()}
    own = model.state_dict()
    first = first_conv_weight(model)
    new_state, loaded, adapted, reinit = {}, [], [], []
    for name, tensor in own.items():
        src = pretrained.get(name)
        if src is None:
            reinit.append((name, "not in the pretrained network"))
        elif src.shape == tensor.shape:
            new_state[name] = src.to(tensor.dtype)
            loaded.append(name)
        elif (
            name == first
            and src.dim() == tensor.dim()
            and src.shape[0] == tensor.shape[0]
            and (src.shape[2:] == tensor.shape[2:])
        ):
            new_state[name] = adapt_first_conv(src.to(tensor.dtype), tensor.shape[1])
            adapted.append(
                (
                    name,
                    f"first convolution, {src.shape[1]} -> {tensor.shape[1]} input channels "
                    f"(mean over the source channels, repeated, x {src.shape[1]}/{tensor.shape[1]})",
                )
            )
        elif _is_head(src.shape, tensor.shape, num_classes):
            reinit.append((name, f"segmentation head, {src.shape[0]} -> {tensor.shape[0]} classes"))
        else:
            reinit.append((name, f"shape {list(src.shape)} -> {list(tensor.shape)}"))
    if not new_state:
        raise ConfigError(
            f"{source}: no tensor of the pretrained network ({_describe(pretrained)}) matches the new network "
            f"{target + ' ' if target else ''}({_describe(own)}) by name and shape; fine-tuning needs the same "
            "architecture: plan the new dataset with `autoseg plan -d N --transfer-plans-from SOURCE` and train "
            "with those plans (--plans)"
        )
    model.load_state_dict(new_state, strict=False)
    unused = tuple(k for k in pretrained if k not in own)
    return TransferReport(source, tuple(loaded), tuple(adapted), tuple(reinit), unused)


def load_pretrained(
    model: torch.nn.Module, path: str | Path, configuration: str, num_classes: int, target: str = ""
) -> TransferReport:
    """Resolve `path`, read it weights-only and transfer its weights into `model`."""
    file = resolve_pretrained(path, configuration)
    return transfer_weights(model, load_weights(file), num_classes, file, target)


# ---- frozen encoder --------------------------------------------------------------------------------------------------
def encoder_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of the network's `encoder` (the built-in U-Nets have one); ConfigError if it has none."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise ConfigError(f"freeze_encoder_epochs: network {type(model).__name__} has no 'encoder' submodule to freeze")
    return list(encoder.parameters())


def set_encoder_frozen(model: torch.nn.Module, frozen: bool) -> None:
    """Frozen: the encoder's parameters get no gradient, so the optimizer leaves them (and their momentum) as they
    are, weight decay included."""
    for param in encoder_parameters(model):
        param.requires_grad_(not frozen)
