"""Plans built by hand for preprocessing tests (independent of the planner)."""

from __future__ import annotations

import pytest

from autoseg.planning.plans import SCHEMA_VERSION, Configuration, NetworkSpec, Plans


def build_plans(
    spacing=(1.0, 1.0, 1.0),
    transpose=(0, 1, 2),
    normalization=("zscore",),
    use_mask=(False,),
    two_d_spacing=None,
    intensity=None,
    cascade=False,
) -> Plans:
    """Plans with a 3d_fullres configuration at `spacing` (transposed order) and optionally a 2d one."""

    def cfg(name, sp, ident):
        n = len(sp)
        return Configuration(
            name=name,
            data_identifier=ident,
            spacing=tuple(float(s) for s in sp),
            patch_size=(16,) * n,
            median_shape=(16,) * n,
            batch_size=2,
            batch_dice=False,
            normalization=tuple(normalization),
            use_mask_for_norm=tuple(use_mask),
            network=NetworkSpec("unet", {}),
        )

    configs = []
    if spacing is not None:
        configs.append(cfg("3d_fullres", spacing, "3d_fullres"))
    if two_d_spacing is not None:
        configs.insert(0, cfg("2d", two_d_spacing, "2d"))
    if cascade:
        from dataclasses import replace

        configs.append(replace(configs[-1], name="3d_cascade_fullres", previous_stage="3d_fullres"))
    return Plans(
        schema_version=SCHEMA_VERSION,
        name="default",
        dataset="Dataset999_Synthetic",
        planner="by hand",
        transpose=tuple(transpose),
        original_median_spacing=(1.0, 1.0, 1.0),
        original_median_shape=(16, 16, 16),
        gpu_memory_gb=8.0,
        configurations=tuple(configs),
        intensity=intensity,
    )


@pytest.fixture
def make_plans():
    return build_plans
