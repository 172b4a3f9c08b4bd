"""End to end on tiny data: every stage of `autoseg demo` runs and leaves its outputs in place."""

import json

import numpy as np

from autoseg.data.image_io import read_file
from autoseg.demo import DemoSettings, run_demo


def test_demo_end_to_end_tiny(workspace):
    settings = DemoSettings(n_train=5, n_test=2, shape=(12, 24, 24), epochs=2, iterations_per_epoch=3, tta=False)
    result = run_demo(workspace, settings, device="cpu")
    assert set(result.dice) == {"organ1 (large, bright)", "organ2 (small, dark)"}
    assert all(0.0 <= d <= 1.0 for d in result.dice.values())
    for what in ("plans", "training log", "progress plot", "metrics", "overlay"):
        assert result.outputs[what].is_file(), what
    assert result.outputs["overlay"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(result.outputs["metrics"].read_text())
    assert summary["num_cases"] == 2
    # predictions carry exactly the input geometry (one test case is oblique: every 4th case)
    for img in sorted((result.outputs["raw dataset"] / "imagesTs").iterdir()):
        case = img.name.replace("_0000.nii.gz", "")
        pred, pgeo = read_file(result.outputs["predictions"] / f"{case}.nii.gz")
        ref, rgeo = read_file(img)
        assert pred.shape == ref.shape and pgeo.matches(rgeo) == []
        assert set(np.unique(pred)) <= {0, 1, 2}
    assert (
        workspace.results / result.dataset / "default" / "3d_fullres" / "default" / "fold_0" / "checkpoint_final.pt"
    ).is_file()
