"""Public adapter API: `from molecule_runtime.adapters import BaseAdapter, AdapterConfig, TaskInput`."""

from molecule_runtime.adapters.base import (
    AdapterConfig,
    BaseAdapter,
    InputRequired,
    NonRetryableError,
    TaskInput,
)
from molecule_runtime.adapters.genai import set_genai_attributes
from molecule_runtime.adapters.usage import report_usage

__all__ = [
    "AdapterConfig",
    "BaseAdapter",
    "InputRequired",
    "NonRetryableError",
    "TaskInput",
    "report_usage",
    "set_genai_attributes",
]
