"""nnU-Net checkpoints are read without running pickled code: numpy scalars allowed, any other global refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunet_folder import arch_kwargs, checkpoint_dict, dna_state_dict, write_model_folder

from autoseg.errors import ConfigError
from autoseg.inference.nnunet_source import load_nnunet_model
from autoseg.networks.nnunet_checkpoint import load_nnunet_weights, read_checkpoint


class Payload:
    """Unpickling this creates a file: the proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _ckpt(tmp_path, **changes):
    state = dna_state_dict(arch_kwargs(3), False, 1, 3)
    data = checkpoint_dict(state, {}, "3d_fullres", 0)
    data.update(changes)
    path = tmp_path / "checkpoint_final.pth"
    torch.save(data, path)
    return path


def test_nnunet_checkpoint_with_numpy_scalars_is_read(tmp_path):
    ckpt = read_checkpoint(_ckpt(tmp_path, inference_allowed_mirroring_axes=(1, 2)))
    assert (ckpt.mirror_axes, ckpt.trainer_name, ckpt.configuration) == ((1, 2), "nnUNetTrainer", "3d_fullres")
    weights = load_nnunet_weights(ckpt.path)
    assert "encoder.stages.0.0.conv.weight" in weights and not any("all_modules" in k for k in weights)
    assert read_checkpoint(_ckpt(tmp_path, inference_allowed_mirroring_axes=None)).mirror_axes is None


def test_checkpoint_carrying_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = _ckpt(tmp_path, logging={"note": Payload(marker)})
    with pytest.raises(ConfigError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and "io.open" in str(err.value)
    assert not marker.exists()


def test_payload_in_a_model_folder_is_refused_before_any_prediction(tmp_path):
    folder = write_model_folder(tmp_path)
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    data = torch.load(ckpt, weights_only=False)  # the test's own file
    marker = tmp_path / "payload_ran"
    data["init_args"]["plans"] = Payload(marker)
    torch.save(data, ckpt)
    with pytest.raises(ConfigError, match=r"checkpoint_final.pth: refused to load.*io.open"):
        load_nnunet_model(folder)
    assert not marker.exists()


def test_not_a_checkpoint_and_missing_weights_are_named(tmp_path):
    bad = tmp_path / "checkpoint_final.pth"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match="not a readable nnU-Net checkpoint"):
        read_checkpoint(bad)
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ConfigError, match="no 'network_weights' entry"):
        read_checkpoint(bad)
    with pytest.raises(ConfigError, match="mirroring_axes must be a list"):
        read_checkpoint(_ckpt(tmp_path, inference_allowed_mirroring_axes="xyz"))


def test_numpy_arrays_are_not_among_the_allowed_types(tmp_path):
    path = _ckpt(tmp_path, _best_ema=np.zeros(3))
    with pytest.raises(ConfigError, match="refused to load"):
        read_checkpoint(path)
