"""Public adapter API: `from molecule_runtime.adapters import BaseAdapter, AdapterConfig, TaskInput`."""

from molecule_runtime.adapters.base import (
    AdapterConfig,
    BaseAdapter,
    InputRequired,
    NonRetryableError,
    TaskInput,
)
from molecule_runtime.adapters.genai import set_genai_attributes

__all__ = [
    "AdapterConfig",
    "BaseAdapter",
    "InputRequired",
    "NonRetryableError",
    "TaskInput",
    "set_genai_attributes",
]
