"""The adapter contract: the public API that workspace adapters implement.

No `from __future__ import annotations` here: Temporal's data converter
resolves these dataclass hints at run time, also inside the workflow sandbox.
"""


import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class NonRetryableError(Exception):
    """Raised by an adapter to fail the task at once, without further attempts."""


@dataclass(frozen=True)
class InputRequired:
    """Yielded by `stream()` to ask the user a question; it must be the last item yielded.

    The task goes to `input-required` with `question` as its status message. The
    user's next message to the same task starts a new turn: `stream()` is called
    again with the answer as `TaskInput.text` and the conversation so far in
    `TaskInput.history`.
    """

    question: str


@dataclass
class TaskInput:
    """Everything an adapter gets about one task; plain data, serialisable as JSON."""

    task_id: str
    context_id: str
    text: str
    history: list[tuple[str, str]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1


@dataclass
class AdapterConfig:
    """Start-up configuration handed to `BaseAdapter.setup`."""

    workspace_id: str
    data_dir: Path
    model: str = ""
    system_prompt: str = ""
    options: dict[str, Any] = field(default_factory=dict)


class BaseAdapter(abc.ABC):
    """Base class of every workspace adapter.

    Adapters turn a `TaskInput` into streamed text and know nothing of A2A or
    Temporal: the runtime owns events, retries, cancellation and persistence.
    """

    @staticmethod
    @abc.abstractmethod
    def name() -> str:
        """Runtime identifier, shown in the agent card, logs and telemetry."""

    async def setup(self, config: AdapterConfig) -> None:  # noqa: B027 - optional hook
        """Called once at start-up, before the first task."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Called once at shutdown; release what `setup` acquired."""

    @abc.abstractmethod
    def stream(self, task: TaskInput) -> AsyncIterator[str | InputRequired]:
        """Yield the answer as text chunks (implement as an async generator).

        Yield `InputRequired("question")` last to ask the user for more input.
        """

    def description(self) -> str:
        """One line for the agent card; override to describe the agent."""
        return f"{self.name()} agent served by molecule-runtime"
