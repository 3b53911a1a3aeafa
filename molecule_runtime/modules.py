"""Import a module by name, or from a `.py` file in the working directory.

A template repo copies `adapter.py` next to where the runtime starts and names
it `adapter`; console scripts do not put the working directory on the import
path, and this package never edits `sys.path`, so such files are loaded by
location. A module importable by name wins.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_module(name: str) -> ModuleType:
    if name.endswith(".py"):
        return _load_file(Path(name))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a missing top-level module means "not on the path": a module that
        # exists but imports something missing must show its own error.
        if "." in name or exc.name != name:
            raise
        candidate = Path.cwd() / f"{name}.py"
        if candidate.is_file():
            return _load_file(candidate, module_name=name)
        raise


def _load_file(path: Path, module_name: str | None = None) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise ModuleNotFoundError(f"no module file at {path}")
    name = module_name or path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing so dataclasses and pickling inside it work.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
