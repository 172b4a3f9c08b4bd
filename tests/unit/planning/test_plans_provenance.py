"""Plans record the planner (registered name) and the plugin modules that made them; loading imports them again."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from test_planner import make_fp

from autoseg import registry
from autoseg.cli.main import main
from autoseg.cli.plan_cmds import plans_name
from autoseg.errors import ConfigError
from autoseg.planning.edit import apply_overrides
from autoseg.planning.planner import plan_dataset, planners
from autoseg.planning.plans import Plans

PLUGIN = "autoseg_test_provenance_plugin"
PLANNER = "test_plugin_planner"
PLUGIN_SOURCE = f'''
from autoseg.planning.planner import DefaultPlanner, planners


@planners.register({PLANNER!r})
class PluginPlanner(DefaultPlanner):
    """The default rules under another name, as a plugin would register them."""
'''


def forget_plugin() -> None:
    """Undo what importing the plugin did, as if in a fresh process."""
    if PLANNER in planners:
        planners.unregister(PLANNER)
    sys.modules.pop(PLUGIN, None)
    if PLUGIN in registry._imported:
        registry._imported.remove(PLUGIN)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable plugin module (registers PLANNER); the record of imported plugins is this test's own."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(registry, "_imported", [])
    yield PLUGIN
    forget_plugin()
    assert PLANNER not in planners


def test_default_plans_record_the_default_planner_and_no_plugins(monkeypatch):
    monkeypatch.setattr(registry, "_imported", [])
    fp = make_fp((1.0, 1.0, 1.0), (36, 50, 35))
    plans, _ = plan_dataset(fp)
    assert (plans.planner, plans.name, plans.plugins) == ("default", "default", ())
    assert plan_dataset(fp, preset="resenc-m")[0].planner == "resenc-m"  # as --preset names it


def test_plugin_planner_and_plugins_roundtrip_through_json(plugin, tmp_path):
    assert registry.import_plugins([plugin]) == [plugin] and registry.imported_plugins() == (plugin,)
    plans, why = plan_dataset(make_fp((1.0, 0.77, 0.77), (480, 512, 512), n=100), planner=PLANNER)
    assert plans.planner == PLANNER and plans.plugins == (plugin,)
    assert plans.name == PLANNER  # not "default": a plugin planner's plans never overwrite the default plans
    assert plans.configuration("3d_lowres").data_identifier == f"3d_lowres_{PLANNER}"
    assert any(f"planner PluginPlanner ({PLANNER!r})" in w for w in why)
    path = plans.save(tmp_path / "plans.json")
    data = json.loads(path.read_text())
    assert data["planner"] == PLANNER and data["plugins"] == [plugin]
    assert Plans.load(path) == plans
    variant, _ = apply_overrides(plans, {"3d_fullres.batch_size": 3}, "bs3")
    assert (variant.planner, variant.plugins) == (PLANNER, (plugin,))
    assert plan_dataset(make_fp((1.0, 1.0, 1.0), (36, 50, 35)), planner=PLANNER, preset="resenc-m")[0].planner == (
        f"{PLANNER}:resenc-m"
    )


def test_loading_imports_the_recorded_plugins_again(plugin, tmp_path):
    registry.import_plugins([plugin])
    path = plan_dataset(make_fp((1.0, 1.0, 1.0), (36, 50, 35)), planner=PLANNER)[0].save(tmp_path / "plans.json")
    forget_plugin()  # a later `train` / `predict` in a new process, without --plugin
    assert PLANNER not in planners
    plans = Plans.load(path)
    assert PLANNER in planners and registry.imported_plugins() == (plugin,) and plans.plugins == (plugin,)


def test_missing_plugin_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_imported", [])
    plans, _ = plan_dataset(make_fp((1.0, 1.0, 1.0), (36, 50, 35)))
    path = replace(plans, plugins=("autoseg_no_such_plugin_xyz",)).save(tmp_path / "plans.json")
    with pytest.raises(ConfigError) as err:
        Plans.load(path)
    msg = str(err.value)
    assert f"plans {path} was made with plugin module 'autoseg_no_such_plugin_xyz'" in msg
    assert "cannot be imported here" in msg and "No module named 'autoseg_no_such_plugin_xyz'" in msg


def test_with_plugins_merges_in_order():
    plans, _ = plan_dataset(make_fp((1.0, 1.0, 1.0), (36, 50, 35)))
    a = replace(plans, plugins=("a", "b"))
    assert a.with_plugins(["b", "c"]).plugins == ("a", "b", "c")
    assert a.with_plugins(["a"]) is a


def test_cli_plans_name_follows_the_planner():
    def name(**kw) -> str:
        base = dict(name=None, set=[], preset=None, gpu_memory=None, planner="default")
        return plans_name(argparse.Namespace(**{**base, **kw}))

    assert name() == "default" and name(preset="resenc-m") == "resenc-m"
    assert name(planner=PLANNER) == PLANNER
    assert name(planner=PLANNER, preset="resenc-l", gpu_memory=40) == f"{PLANNER}_resenc-l_40gb"
    assert name(planner=PLANNER, name="default") == "default"  # overwriting the default plans only when asked


def test_cli_plugin_planner_writes_its_own_plans_file(plugin, workspace, capsys):
    fp = make_fp((1.0, 1.0, 1.0), (36, 50, 35))
    fp.save(workspace.fingerprint_file(fp.dataset))
    argv = ["plan", "-d", "900", "--workspace", str(workspace.root), "--planner", PLANNER, "--plugin", plugin]
    assert main(argv) == 0
    capsys.readouterr()
    assert not workspace.plans_file(fp.dataset).exists()
    plans = Plans.load(workspace.plans_file(fp.dataset, PLANNER))
    assert (plans.name, plans.planner, plans.plugins) == (PLANNER, PLANNER, (plugin,))
