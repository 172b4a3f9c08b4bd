"""The package's layers (docs/architecture.md, "Layers"): every import points downwards, no module imports itself
back through others, and imports sit at the top of modules except where a stated reason keeps them inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import autoseg

PACKAGE = Path(autoseg.__file__).parent

# lowest first; a module may import its own layer and the layers before it
LAYERS = (
    ("core", ("autoseg", "autoseg.errors", "autoseg.typing", "autoseg.log", "autoseg.registry",
              "autoseg.serialization", "autoseg.workspace", "autoseg.resources", "autoseg.device")),
    ("data", ("autoseg.data",)),
    ("networks", ("autoseg.networks",)),
    ("fingerprint", ("autoseg.fingerprint",)),
    ("planning", ("autoseg.planning",)),
    ("preprocessing", ("autoseg.preprocessing",)),
    ("evaluation", ("autoseg.evaluation",)),
    ("inference", ("autoseg.inference",)),
    ("training", ("autoseg.training",)),
    ("applications", ("autoseg.bundle", "autoseg.benchmark", "autoseg.demo", "autoseg.demo_stages")),
    ("cli", ("autoseg.cli", "autoseg.__main__")),
)  # fmt: skip

# third-party imports that may stay inside a function, and why
LOCAL_IMPORT_REASONS = {
    "matplotlib": "plots only (progress.png, overlays): processes that never plot do not pay its import",
    "tqdm": "autoseg.log imports tqdm.auto on the first progress bar: 140 ms that `autoseg --help` does not pay",
    "highdicom": "optional DICOM extra, loaded on the first DICOM-SEG: 0.4 s that `predict` on NIfTI does not pay",
}
LAZY_PACKAGES = ("autoseg.cli",)  # command handlers import the library on use: `autoseg --help` stays fast


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, index = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "autoseg" and module.startswith(prefix + "."))
            if matches and len(prefix) > len(best):
                best, index = prefix, i
    if index is None:
        return 0 if module == "autoseg" else -1
    return index


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) of every import of the file; `from autoseg.x import y` gives
    autoseg.x.y when that is a module, else autoseg.x."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() or (
                        PACKAGE.parent / sub.replace(".", "/") / "__init__.py"
                    ).is_file()
                    found.append((sub if is_module else child.module, child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert [m for m in package_modules() if layer_of(m) < 0] == []


def test_imports_only_point_downwards():
    upward = []
    for module, path in package_modules().items():
        for target, line, _ in imports_of(path):
            if target.startswith("autoseg") and layer_of(target) > layer_of(module):
                upward.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} {module} ({LAYERS[layer_of(module)][0]}) imports "
                    f"{target} ({LAYERS[layer_of(target)][0]})"
                )
    assert upward == []


def test_no_import_cycles():
    modules = package_modules()
    graph = {
        m: {t for t, _, _ in imports_of(p) if t in modules and t != m and t != "autoseg"} for m, p in modules.items()
    }
    cycles, state = [], {}

    def walk(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t) :] + [m, t]) if t in stack else f"{m} -> {t}")
            elif t not in state:
                walk(t, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m, [])
    assert cycles == []


def test_function_local_imports_have_a_stated_reason():
    unexplained = []
    for module, path in package_modules().items():
        if module.startswith(LAZY_PACKAGES) or module == "autoseg.__main__":
            continue
        for target, line, local in imports_of(path):
            if local and target.split(".")[0] not in LOCAL_IMPORT_REASONS:
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function")
    assert unexplained == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [("autoseg.data.image_io", "data"), ("autoseg.workspace", "core"), ("autoseg.cli.main", "cli"),
     ("autoseg.inference.predictor", "inference"), ("autoseg.bundle", "applications")],
)  # fmt: skip
def test_layer_lookup(module, layer):
    assert LAYERS[layer_of(module)][0] == layer


def test_the_checker_sees_an_upward_and_a_local_import(tmp_path, monkeypatch):
    """The checks above cannot pass vacuously: an upward import and a function-local one are found."""
    bad = tmp_path / "autoseg" / "data" / "bad.py"
    bad.parent.mkdir(parents=True)
    (tmp_path / "autoseg" / "__init__.py").write_text("")
    (tmp_path / "autoseg" / "data" / "__init__.py").write_text("")
    bad.write_text("from autoseg.training import trainer\n\ndef f():\n    import pandas\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "autoseg")
    assert module_name(bad) == "autoseg.data.bad"
    found = imports_of(bad)
    assert ("autoseg.training", 1, False) in found and ("pandas", 4, True) in found
    assert layer_of("autoseg.training") > layer_of("autoseg.data.bad")
