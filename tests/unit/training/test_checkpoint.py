import io
import pickle
import random

import numpy as np
import pytest
import torch

from autoseg.errors import ConfigError
from autoseg.training.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint


class Payload:
    """A custom class: unpickling it would run arbitrary code paths."""

    def __reduce__(self):
        return (print, ("pwned",))


class Settings:
    def __init__(self):
        self.lr = 0.01


def test_roundtrip_plain_values(tmp_path):
    model = torch.nn.Linear(3, 2)
    payload = {
        "model": model.state_dict(),
        "epoch": 4,
        "curves": {"lr": [0.01, 0.009]},
        "best": None,
        "rng": capture_rng(),
    }
    path = save_checkpoint(tmp_path / "c.pt", payload)
    data = load_checkpoint(path)
    assert data["epoch"] == 4 and data["curves"] == {"lr": [0.01, 0.009]} and data["best"] is None
    assert torch.equal(data["model"]["weight"], model.weight.detach())
    assert data["versions"]["torch"] == torch.__version__
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


def test_rng_states_restore_exactly():
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"model": {}, "extra": Payload()}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(ConfigError, match="evil.pt: refused to load: the checkpoint contains pickled Python objects"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out
    buf = io.BytesIO()
    torch.save({"model": {}, "settings": Settings()}, buf)
    (tmp_path / "custom.pt").write_bytes(buf.getvalue())
    with pytest.raises(ConfigError, match=r"custom.pt: refused to load: .*pickled Python objects \(.*Settings\)"):
        load_checkpoint(tmp_path / "custom.pt")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ConfigError, match="plain.pkl: (refused to load|not a readable checkpoint)"):
        load_checkpoint(plain)


def test_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ConfigError, match="trunc.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buf)
    (tmp_path / "other.pt").write_bytes(buf.getvalue())
    with pytest.raises(ConfigError, match="not an autoseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
