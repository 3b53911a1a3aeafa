"""Public adapter API: `from molecule_runtime.adapters import BaseAdapter, AdapterConfig, TaskInput`."""

from molecule_runtime.adapters.base import (
    AdapterConfig,
    BaseAdapter,
    NonRetryableError,
    TaskInput,
)

__all__ = ["AdapterConfig", "BaseAdapter", "NonRetryableError", "TaskInput"]
