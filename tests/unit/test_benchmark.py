import dataclasses
import json

import pytest

from autoseg.benchmark import format_table, full_training_estimate, planner_memory_estimate, run_benchmark
from autoseg.cli.main import main
from autoseg.errors import ConfigError
from autoseg.networks.memory import estimate_feature_map_voxels
from autoseg.planning.plans import NetworkSpec, Plans
from autoseg.preprocessing.pipeline import plan_and_preprocess

KEYS = {
    "dataset", "plans", "configuration", "trainer", "date", "machine", "patch_size", "batch_size", "num_workers",
    "iterations", "loader", "pipelines", "train", "memory", "inference", "full_training",
}  # fmt: skip


def _shrink_network(ws, name: str) -> Plans:
    """The planned 3d_fullres with a tiny U-Net (same strides and patch), so a training step takes milliseconds."""
    path = ws.plans_file(name)
    plans = Plans.load(path)
    confs = []
    for c in plans.configurations:
        params = dict(c.network.params)
        n = params["n_stages"]
        params["features_per_stage"] = [min(4 * 2**i, 16) for i in range(n)]
        params["n_conv_per_stage"] = [1] * n
        params["n_conv_per_stage_decoder"] = [1] * (n - 1)
        confs.append(dataclasses.replace(c, network=NetworkSpec(c.network.name, params)))
    plans = dataclasses.replace(plans, configurations=tuple(confs))
    plans.save(path)
    return plans


@pytest.fixture
def preprocessed(workspace, synthetic):
    synthetic(n_cases=5, shape=(12, 20, 20))
    report = plan_and_preprocess(workspace, "999", ["3d_fullres"], jobs=1)
    return workspace, report.dataset, _shrink_network(workspace, report.dataset)


def test_benchmark_end_to_end(preprocessed, tmp_path, capsys):
    ws, name, plans = preprocessed
    out = tmp_path / "bench.json"
    argv = ["benchmark", "--workspace", str(ws.root), "-d", "999", "-c", "3d_fullres", "--iterations", "2"]
    assert main([*argv, "-j", "0", "--device", "cpu", "-o", str(out)]) == 0  # --step-ms: the measured step
    printed = capsys.readouterr().out
    assert "train iteration" in printed and "full training (1000 x 250)" in printed and f"wrote {out}" in printed
    result = json.loads(out.read_text())
    assert set(result) == KEYS
    conf = plans.configuration("3d_fullres")
    assert result["dataset"] == name and result["patch_size"] == list(conf.patch_size)
    assert result["batch_size"] == conf.batch_size and result["num_workers"] == 0 and result["iterations"] == 2
    assert result["loader"]["batches_per_s"] > 0 and result["loader"]["n_batches"] == 2
    train = result["train"]
    for key in ("seconds_per_iteration", "seconds_per_iteration_no_loading", "val_seconds_per_iteration"):
        assert 0 < train[key] < 60
    assert 0 <= train["data_wait_seconds_per_iteration"] <= train["seconds_per_iteration"]
    assert result["memory"]["peak_gpu_memory_gb"] is None  # CPU run
    assert result["memory"]["feature_map_voxels"] > 0 and result["memory"]["planned_budget_gb"] == 8.0
    inf = result["inference"]
    assert inf["mirror_axes"] == [0, 1, 2] and inf["seconds_tta_on"] > 0 and inf["seconds_tta_off"] > 0
    full = result["full_training"]
    per_epoch = 250 * train["seconds_per_iteration"] + 50 * train["val_seconds_per_iteration"]
    assert full["seconds_per_epoch"] == pytest.approx(per_epoch)
    assert full["hours"] == pytest.approx(per_epoch * 1000 / 3600)
    pipes = {p["pipeline"]: p for p in result["pipelines"]}
    assert set(pipes) == {"default", "batchgenerators"}
    step_ms = 1000 * train["seconds_per_iteration_no_loading"]
    for p in pipes.values():  # on CPU the augmentation runs in the workers: no device time, all of it CPU
        # the workers' CPU comes from /proc in clock ticks (10 ms): two tiny batches may round to 0
        assert p["cpu_ms_sampling"] > 0 and p["device_ms_augmentation"] is None
        assert p["cpu_ms_per_batch_gpu_training"] >= 0 and p["cpu_ms_per_batch_cpu_training"] >= 0
        cpu = p["cpu_ms_per_batch_cpu_training"]
        assert p["step_ms"] == pytest.approx(step_ms) and p["cores_needed"] == pytest.approx(cpu / step_ms)
    assert "pipeline default" in printed and "pipeline batchgenerators" in printed
    assert format_table(result).count("\n") >= 14


def test_needs_preprocessed_data(workspace, synthetic, capsys):
    synthetic(n_cases=5)
    with pytest.raises(ConfigError, match=r"plans.json: plans not found; run `autoseg plan_and_preprocess -d 999`"):
        run_benchmark(workspace, "999", "3d_fullres", iterations=1, device="cpu")
    code = main(["benchmark", "--workspace", str(workspace.root), "-d", "999", "-c", "3d_fullres"])
    assert code == 1 and "autoseg benchmark: error:" in capsys.readouterr().err


def test_needs_the_configuration_preprocessed(preprocessed):
    ws, name, _ = preprocessed
    with pytest.raises(ConfigError, match=r"2d: no preprocessed cases of '2d'; run `autoseg plan_and_preprocess"):
        run_benchmark(ws, name, "2d", iterations=1, device="cpu")
    with pytest.raises(ConfigError, match="--iterations must be >= 1"):
        run_benchmark(ws, name, "3d_fullres", iterations=0)


def test_planner_memory_estimate_scaling(preprocessed):
    _, _, plans = preprocessed
    conf = plans.configuration("3d_fullres")
    voxels = estimate_feature_map_voxels("unet", conf.network.params, conf.patch_size, 1, 3, deep_supervision=False)
    est = planner_memory_estimate(plans, conf, batch_size=4, in_channels=1, num_classes=3)
    assert est["feature_map_voxels"] == voxels
    assert est["estimate_gb"] == pytest.approx(voxels * 4 / 2 / 560e6 * 8.0)  # 560e6 voxels at batch 2 = 8 GB
    c2d = plans.configuration("2d")
    est2 = planner_memory_estimate(plans, c2d, batch_size=12, in_channels=1, num_classes=3)
    v2 = estimate_feature_map_voxels("unet", c2d.network.params, c2d.patch_size, 1, 3, deep_supervision=False)
    assert est2["estimate_gb"] == pytest.approx(v2 / 85e6 * 8.0)  # 85e6 voxels at batch 12 = 8 GB


def test_full_training_estimate():
    train = {"seconds_per_iteration": 0.5, "seconds_per_iteration_no_loading": 0.4, "val_seconds_per_iteration": 0.2}
    est = full_training_estimate(train, epochs=10, iterations=100, val_iterations=20)
    assert est["seconds_per_epoch"] == pytest.approx(54.0)
    assert est["hours"] == pytest.approx(540 / 3600) and est["hours_no_loading"] == pytest.approx(440 / 3600)
