"""Public adapter API: `from molecule_runtime.adapters import BaseAdapter, AdapterConfig, TaskInput`."""

from molecule_runtime.adapters.base import (
    AdapterConfig,
    BaseAdapter,
    DataPart,
    FilePart,
    InputPart,
    InputRequired,
    NonRetryableError,
    TaskInput,
    TextPart,
)
from molecule_runtime.adapters.genai import set_genai_attributes
from molecule_runtime.adapters.outputs import (
    Artifact,
    DataOutput,
    Done,
    FileOutput,
    Output,
    Reject,
    TextOutput,
)
from molecule_runtime.adapters.steps import StepMismatch, StepResultError, step
from molecule_runtime.adapters.usage import report_usage

__all__ = [
    "AdapterConfig",
    "Artifact",
    "BaseAdapter",
    "DataOutput",
    "DataPart",
    "Done",
    "FileOutput",
    "FilePart",
    "InputPart",
    "InputRequired",
    "NonRetryableError",
    "Output",
    "Reject",
    "StepMismatch",
    "StepResultError",
    "TaskInput",
    "TextOutput",
    "TextPart",
    "report_usage",
    "set_genai_attributes",
    "step",
]
