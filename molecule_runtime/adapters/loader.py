"""Adapter resolution: `ADAPTER_MODULE` first, then a built-in named by `RUNTIME`."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from molecule_runtime.adapters.base import BaseAdapter
from molecule_runtime.modules import import_module

ENTRY_POINT_GROUP = "molecule_runtime.adapters"

# The adapters this package ships. Also registered as entry points, but listed
# here too so they resolve (and error messages list them) when the package runs
# from a source tree whose metadata is missing or stale.
PACKAGED_ADAPTERS = {
    "echo": "molecule_runtime.adapters.echo:EchoAdapter",
    "langgraph": "molecule_runtime.adapters.langgraph:LangGraphAdapter",
}


class AdapterResolutionError(RuntimeError):
    """No adapter could be loaded; the message names everything that was tried."""


def builtin_adapters() -> dict[str, str]:
    """Built-in adapter names mapped to their `module:attr` targets (plug-ins included)."""
    return {
        **PACKAGED_ADAPTERS,
        **{ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)},
    }


def _load_target(target: str) -> object:
    module_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def _check_class(obj: object, where: str) -> type[BaseAdapter]:
    if not (isinstance(obj, type) and issubclass(obj, BaseAdapter)):
        raise AdapterResolutionError(
            f"{where} is {obj!r}, which is not a subclass of "
            "molecule_runtime.adapters.BaseAdapter"
        )
    return obj


def resolve_adapter_class(adapter_module: str | None, runtime: str) -> type[BaseAdapter]:
    """Find the adapter class; raise `AdapterResolutionError` naming what was tried.

    An adapter module that exists but fails while importing propagates its own
    exception (with its traceback): that is the adapter author's bug to see.
    """
    if adapter_module:
        try:
            module = import_module(adapter_module)
        except ModuleNotFoundError as exc:
            missing = exc.name or adapter_module
            if missing.split(".")[0] != adapter_module.split(".")[0] and not adapter_module.endswith(".py"):
                raise  # the adapter itself imports something that is missing
            raise AdapterResolutionError(
                f"ADAPTER_MODULE={adapter_module!r}: no such module (looked on the Python "
                f"path and for {adapter_module}.py in {Path.cwd()}); "
                f"built-in adapters (RUNTIME): {', '.join(sorted(builtin_adapters())) or 'none installed'}"
            ) from exc
        if not hasattr(module, "Adapter"):
            raise AdapterResolutionError(
                f"ADAPTER_MODULE={adapter_module!r} ({getattr(module, '__file__', '?')}) "
                "imports but defines no class named `Adapter`"
            )
        return _check_class(module.Adapter, f"{adapter_module}.Adapter")

    available = builtin_adapters()
    target = available.get(runtime)
    if target is None:
        names = ", ".join(sorted(available))
        raise AdapterResolutionError(
            f"RUNTIME={runtime!r} is not a built-in adapter and ADAPTER_MODULE is not set; "
            f"available built-ins: {names}"
        )
    return _check_class(_load_target(target), f"built-in adapter {runtime!r} ({target})")
