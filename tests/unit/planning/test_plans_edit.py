"""--set variants: apply_overrides validates like a loaded plans file and names the configuration and field."""

from __future__ import annotations

import pytest
from test_nnunet_agreement import CASES_DIR

from autoseg.errors import PlansError
from autoseg.fingerprint.nnunet_compat import from_nnunet
from autoseg.planning.edit import apply_overrides
from autoseg.planning.planner import plan_dataset


@pytest.fixture(scope="module")
def liver_plans():
    return plan_dataset(from_nnunet(CASES_DIR / "msd03_liver" / "fingerprint.json"))[0]


def test_batch_and_patch_override_writes_a_named_variant(liver_plans):
    new, notes = apply_overrides(
        liver_plans, {"3d_fullres.batch_size": 4, "3d_fullres.patch_size": [64, 64, 64]}, "bs4"
    )
    assert new.name == "bs4"
    for name in ("3d_fullres", "3d_cascade_fullres"):  # the cascade follows 3d_fullres
        c = new.configuration(name)
        assert c.batch_size == 4 and c.patch_size == (64, 64, 64)
        assert c.data_identifier == "3d_fullres"  # same preprocessing, same data
    assert new.configuration("3d_lowres") == liver_plans.configuration("3d_lowres")
    assert "3d_fullres: batch_size = 4" in notes


def test_network_param_override(liver_plans):
    new, _ = apply_overrides(liver_plans, {"2d.network.params.n_conv_per_stage_decoder": [1] * 7}, "dec1")
    assert new.configuration("2d").network.params["n_conv_per_stage_decoder"] == [1] * 7


def test_preprocessing_change_gets_its_own_data(liver_plans):
    new, notes = apply_overrides(liver_plans, {"3d_fullres.spacing": [1.5, 1.5, 1.5]}, "iso15")
    assert new.configuration("3d_fullres").data_identifier == "3d_fullres_iso15"
    assert any("own data_identifier" in n for n in notes)


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "3d_fullres.patch_size",
            [60, 64, 64],
            r"'3d_fullres': patch_size \[60, 64, 64\] is not divisible",
        ),
        (
            "3d_fullres.batchsize",
            4,
            r"'3d_fullres': unknown field 'batchsize'; fields here: .*batch_size",
        ),
        ("3d_fullres.batch_size", "four", r"configuration '3d_fullres': field batch_size: expected an integer"),
        ("3d_fullres.patch_size", [64, 64], r"configuration '3d_fullres': field patch_size: expected 3 values|has 2"),
        ("3d_highres.batch_size", 4, r"no configuration '3d_highres'; available: 2d, 3d_lowres"),
        ("batch_size", 4, r"expected CONFIGURATION.FIELD=VALUE"),
        ("2d.name", "x", r"field 'name' cannot be changed"),
    ],
)
def test_invalid_overrides_name_configuration_and_field(liver_plans, key, value, message):
    with pytest.raises(PlansError, match=message):
        apply_overrides(liver_plans, {key: value}, "bad")


def test_variant_needs_a_new_name(liver_plans):
    with pytest.raises(PlansError, match="needs a new name"):
        apply_overrides(liver_plans, {"2d.batch_size": 4}, "default")
