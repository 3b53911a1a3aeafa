"""Load `module:attr` targets named in settings (model factories, tool lists).

Resolution mirrors `ADAPTER_MODULE`: a module importable by name wins; a bare
name falls back to `<name>.py` in the working directory, and a target whose
module part ends in `.py` is loaded from that file. Files are loaded by
location because console scripts do not put the working directory on the
import path, and this package never edits `sys.path`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


class TargetError(ValueError):
    """A `module:attr` setting does not name a loadable object."""


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


def load_target(target: str, *, default_attr: str | None = None, setting: str = "target") -> Any:
    """Return the object named by `module:attr` (or `module` when `default_attr` is given)."""
    module_name, sep, attr = target.rpartition(":")
    if not sep:
        if default_attr is None:
            raise TargetError(f"{setting}={target!r}: expected 'module:attribute'")
        module_name, attr = target, default_attr
    if not module_name or not attr:
        raise TargetError(f"{setting}={target!r}: expected 'module:attribute'")
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TargetError(
            f"{setting}={target!r}: cannot import {module_name!r} ({exc}); looked on the "
            f"Python path and for {module_name}.py in {Path.cwd()}"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TargetError(
            f"{setting}={target!r}: module {module_name!r} "
            f"({getattr(module, '__file__', '?')}) has no attribute {attr!r}"
        ) from None
