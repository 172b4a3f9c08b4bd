import pytest

from autoseg.errors import ConfigError
from autoseg.training.config import TrainConfig, apply_overrides, load_train_config, save_train_config


def test_defaults_match_nnunet():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.iterations_per_epoch, cfg.val_iterations_per_epoch) == (1000, 250, 50)
    assert (cfg.lr, cfg.weight_decay, cfg.momentum, cfg.grad_clip) == (1e-2, 3e-5, 0.99, 12.0)
    assert (cfg.oversample_foreground, cfg.seed, cfg.loss) == (0.33, 12345, "dice_ce")


def test_overrides_are_typed():
    cfg = apply_overrides(TrainConfig(), {"epochs": 100, "lr": 1, "val_tta": "false", "iterations_per_epoch": 50})
    assert cfg.epochs == 100 and cfg.iterations_per_epoch == 50
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.val_tta is False
    assert TrainConfig().epochs == 1000  # original untouched


def test_unknown_name_lists_valid_ones():
    with pytest.raises(
        ConfigError, match="unknown training setting 'epoch'.*valid names: epochs, iterations_per_epoch"
    ):
        apply_overrides(TrainConfig(), {"epoch": 3})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", 1.5, "must be of type int"),
        ("epochs", True, "must be of type int"),
        ("lr", "fast", "type float"),
        ("epochs", 0, "epochs must be >= 1"),
        ("oversample_foreground", 2.0, r"in \[0, 1\]"),
    ],
)
def test_bad_values(key, value, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(), {key: value})


def test_roundtrip(tmp_path):
    cfg = apply_overrides(TrainConfig(), {"epochs": 7, "lr": 0.005})
    save_train_config(tmp_path / "train_config.json", cfg)
    assert load_train_config(tmp_path / "train_config.json") == cfg
    (tmp_path / "bad.json").write_text('{"epochs": "x"}')
    with pytest.raises(ConfigError, match="bad.json: invalid train config: epochs: expected an integer"):
        load_train_config(tmp_path / "bad.json")
