"""Load `module:attr` targets named in settings (model factories, tool lists).

Resolution mirrors `ADAPTER_MODULE`: a module importable by name wins; a bare
name falls back to `<name>.py` in the working directory, and a target whose
module part ends in `.py` is loaded from that file. Files are loaded by
location because console scripts do not put the working directory on the
import path, and this package never edits `sys.path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from molecule_runtime.modules import import_module


class TargetError(ValueError):
    """A `module:attr` setting does not name a loadable object."""


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
