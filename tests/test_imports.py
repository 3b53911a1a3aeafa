"""Every module imports on its own, and no source file plays with `sys.path` or `adapters`."""

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
