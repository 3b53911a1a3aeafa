"""Every module imports on its own, imports run one way along the layers of
docs/architecture.md with no cycle, and no source file plays with `sys.path` or
`adapters`."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import molecule_runtime

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ["molecule_runtime", "adapters", "tests", "bench"]


def all_modules() -> list[str]:
    names = ["molecule_runtime"]
    for info in pkgutil.walk_packages(molecule_runtime.__path__, prefix="molecule_runtime."):
        names.append(info.name)
    return sorted(names)


def source_files() -> list[Path]:
    files: list[Path] = []
    for folder in SOURCE_DIRS:
        base = ROOT / folder
        if base.is_dir():
            files.extend(
                p
                for p in base.rglob("*.py")
                if ".venv" not in p.parts and "__pycache__" not in p.parts
            )
    return sorted(files)


def test_modules_found() -> None:
    modules = all_modules()
    assert "molecule_runtime.cli" in modules
    assert "molecule_runtime.server.app" in modules
    assert "molecule_runtime.adapters.echo" in modules


@pytest.mark.parametrize("name", all_modules())
def test_module_imports(name: str) -> None:
    if name == "molecule_runtime.__main__":
        # Importing it runs the CLI: run it as `python -m`, in a process of its own.
        result = subprocess.run(
            [sys.executable, "-m", "molecule_runtime", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"molecule-runtime {molecule_runtime.__version__}"
        return
    importlib.import_module(name)


def _is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def violations(tree: ast.Module) -> list[str]:
    """Imports of the top-level `adapters` folder and `sys.path` mutations in one module.

    `adapters/` holds templates, not an installed package: importing it only works
    when the current directory happens to be on `sys.path`.
    """
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "adapters" or node.module.startswith("adapters."):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "adapters" or alias.name.startswith("adapters."):
                    found.append(f"line {node.lineno}: import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if _is_sys_path(node.func.value) and node.func.attr in {
                "insert",
                "append",
                "extend",
                "remove",
                "pop",
                "clear",
                "__setitem__",
            }:
                found.append(f"line {node.lineno}: sys.path.{node.func.attr}(...)")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                base = target.value if isinstance(target, ast.Subscript) else target
                if _is_sys_path(base):
                    found.append(f"line {node.lineno}: assignment to sys.path")
    return found


def test_no_top_level_adapters_import_or_sys_path_edit() -> None:
    files = source_files()
    assert any(p.name == "cli.py" for p in files)
    problems = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        problems.extend(f"{path.relative_to(ROOT)} {v}" for v in violations(tree))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "from adapters.echo import Adapter\n",
        "import adapters\n",
        "import adapters.langgraph.adapter\n",
        "import sys\nsys.path.insert(0, '.')\n",
        "import sys\nsys.path.append('..')\n",
        "import sys\nsys.path = ['.']\n",
        "import sys\nsys.path += ['.']\n",
        "import sys\nsys.path[0] = '.'\n",
        "import sys\ndef f():\n    sys.path.insert(0, '/x')\n",
        "def f():\n    from adapters import x\n",
    ],
)
def test_guard_catches(source: str) -> None:
    assert violations(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        "from molecule_runtime.adapters import BaseAdapter\n",
        "import sys\nprint(sys.path)\n",
        "from molecule_runtime import adapters\n",
        "from .adapters import x\n",
    ],
)
def test_guard_allows(source: str) -> None:
    assert not violations(ast.parse(source))


# The package's layers, top to bottom (docs/architecture.md): a module imports
# modules of its own unit and of the layers below, never above, and never a
# sibling unit of its own layer. A unit is a sub-package or a top-level module.
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"process"},
    {"server"},
    {"services"},
    {"recovery"},
    {"durable"},
    {"execution"},
    {"push"},
    {"store"},
    {"observability"},
    {"adapters"},
    {"config", "file_lock", "keyed_lock", "modules", "push_policy", "refusals", "sdk_seam"},
    {"states"},
    {"vocabulary"},
    {""},  # the package itself: its version
]
# Modules split out of another that keep its unit (one job, two files).
SAME_UNIT = {"config_checks": "config"}


def unit_of(module: str) -> str:
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else ""
    return SAME_UNIT.get(unit, unit)


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"{unit!r} is in no layer of LAYERS: place it")


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def imported(tree: ast.Module, known: set[str], types_too: bool) -> set[str]:
    """The package's modules `tree` imports anywhere (in functions too); with
    `types_too`, also those imported for type checking only."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node) and not types_too:
            return
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found.update(submodules)
            if node.module in known and len(submodules) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def module_sources() -> dict[str, Path]:
    base = ROOT / "molecule_runtime"
    sources = {}
    for path in base.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path
    return sources


def import_graph(types_too: bool) -> dict[str, set[str]]:
    sources = module_sources()
    known = set(sources)
    return {
        name: imported(ast.parse(path.read_text(), filename=str(path)), known, types_too) - {name}
        for name, path in sources.items()
    }


def arrows_up(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = unit_of(importer), unit_of(target)
            if a == b:
                continue
            if layer_of(a) >= layer_of(b):
                kind = "a sibling" if layer_of(a) == layer_of(b) else "a layer above"
                found.append(f"{importer} imports {target}: {kind}")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_every_unit_has_a_layer() -> None:
    for name in module_sources():
        layer_of(unit_of(name))


def test_imports_point_down_the_layers() -> None:
    # Type-only imports count too: they name a dependency all the same.
    problems = arrows_up(import_graph(types_too=True))
    assert not problems, "\n".join(problems)


def test_no_import_cycle() -> None:
    assert not cycles(import_graph(types_too=False))


def test_layer_checks_catch() -> None:
    up = {"molecule_runtime.store.health": {"molecule_runtime.execution.admission"}}
    assert arrows_up(up) == [
        "molecule_runtime.store.health imports molecule_runtime.execution.admission: a layer above"
    ]
    sibling = {"molecule_runtime.refusals": {"molecule_runtime.sdk_seam"}}
    assert arrows_up(sibling)
    assert not arrows_up({"molecule_runtime.server.app": {"molecule_runtime.store.health"}})
    assert not arrows_up({"molecule_runtime.config": {"molecule_runtime.config_checks"}})
    loop = {"molecule_runtime.a": {"molecule_runtime.b"}, "molecule_runtime.b": {"molecule_runtime.a"}}
    assert cycles(loop) == [["molecule_runtime.a", "molecule_runtime.b"]]
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from molecule_runtime import x\n"
    known = {"molecule_runtime", "molecule_runtime.x"}
    assert imported(ast.parse(source), known, types_too=False) == set()
    assert imported(ast.parse(source), known, types_too=True) == {"molecule_runtime.x"}
    inner = "def f():\n    import molecule_runtime.x\n"
    assert imported(ast.parse(inner), known, types_too=False) == {"molecule_runtime.x"}
