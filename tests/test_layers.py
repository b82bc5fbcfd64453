"""The architecture rules of ARCHITECTURE.md, checked on the source tree.

- Layers point one way: ``geo`` ← ``grids`` ← ``maps`` ← ``sites`` ← ``data`` ← ``api``. A module imports
  civicgrid modules of its own layer or of lower ones only, at any depth (a function-level import counts).
- Inside the library layers (everything but ``api``) civicgrid modules are imported at module level (or under
  ``TYPE_CHECKING``): no import inside a function to dodge a cycle.
- Nothing is loaded by name (``importlib.import_module``, ``__import__``).
- Every package folder is listed in ``pyproject.toml`` and installs under the ``civicgrid`` namespace.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: layer folder -> rank (lower is more basic)
LAYERS = {"geo": 0, "grids": 1, "maps": 2, "sites": 3, "data": 4, "api": 5}


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "civicgrid" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _modules() -> list[tuple[str, Path]]:
    return [(layer, f) for layer in LAYERS for f in sorted((ROOT / layer).rglob("*.py"))]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """Yield ``(node, module_name, at_module_level)`` for each absolute import of the tree."""
    def visit(node: ast.AST, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child, alias.name, top
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child, child.module, top
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and top and _is_type_checking(child):
                yield from visit(child, True)
            else:
                yield from visit(child, top)
    yield from visit(tree, True)


def _rel(f: Path) -> str:
    return f.relative_to(ROOT).as_posix()


def test_imports_point_down_the_layers():
    upward = []
    for layer, f in _modules():
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node, module, _top in _imports(tree):
            target = _layer_of(module)
            if target is not None and LAYERS[target] > LAYERS[layer]:
                upward.append(f"{_rel(f)}:{node.lineno} ({layer}) imports {module} ({target})")
            if module.split(".")[0] in LAYERS:
                upward.append(f"{_rel(f)}:{node.lineno} imports {module}: write civicgrid.{module}")
    assert not upward, "imports that point up a layer or miss the namespace:\n" + "\n".join(upward)


def test_library_layers_import_civicgrid_at_module_level():
    late = []
    for layer, f in _modules():
        # CLI commands import their capability when run, to keep `civicgrid --help` fast; routers and the app don't
        if layer == "api" and (f.parent.name == "commands" or f.name == "cli.py"):
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        late += [f"{_rel(f)}:{node.lineno} imports {module} inside a function"
                 for node, module, top in _imports(tree) if not top and module.startswith("civicgrid")]
    assert not late, "civicgrid imports inside functions (a cycle to break, not to dodge):\n" + "\n".join(late)


def test_nothing_is_loaded_by_name():
    found = []
    for _layer, f in [*_modules(), ("civicgrid", ROOT / "civicgrid" / "__init__.py")]:
        if f.parent.name == "civicgrid":  # the facade resolves its entry points lazily from a fixed table
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
                if name in ("import_module", "__import__"):
                    found.append(f"{_rel(f)}:{node.lineno} calls {name}")
    assert not found, "modules loaded by name:\n" + "\n".join(found)


def test_every_package_folder_is_installed_under_civicgrid():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    dirs = config["package-dir"]
    assert dirs["civicgrid"] == "civicgrid"
    assert {dirs[f"civicgrid.{layer}"] for layer in LAYERS} == set(LAYERS)
    folders = {"civicgrid"} | {
        "civicgrid." + ".".join(p.parent.relative_to(ROOT).parts)
        for layer in LAYERS for p in (ROOT / layer).rglob("__init__.py")}
    assert set(config["packages"]) == folders


@pytest.mark.parametrize("name", ["open_store", "EventFilter", "heatmap_frame", "site_risk", "plan_day",
                                  "list_cases", "kpi_table", "assess"])
def test_facade_exposes_the_analysts_entry_points(name):
    import civicgrid

    assert name in civicgrid.__all__
    assert callable(getattr(civicgrid, name))
