"""The adapter contract: the public API that workspace adapters implement.

No `from __future__ import annotations` here: Temporal's data converter
resolves these dataclass hints at run time, also inside the workflow sandbox.
"""


import abc
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from molecule_runtime.adapters.outputs import Output

# Media types every adapter takes and gives by default: text parts, data parts
# (JSON) and files, which may be of any media type (octet-stream stands for them).
DEFAULT_MODES = ("text/plain", "application/json", "application/octet-stream")


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


# Input parts: the parts of the user's message as plain data. Each carries a
# `kind` so JSON (Temporal's converter, a queue) can tell them apart again.


@dataclass
class TextPart:
    """A text part of the user's message."""

    text: str
    kind: Literal["text"] = "text"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class FilePart:
    """A file the user sent: its bytes (base64 in `data_base64`, as A2A's JSON
    carries them, so the input stays JSON) or a `url` to fetch it from."""

    name: str = ""
    media_type: str = ""
    data_base64: str = ""
    url: str = ""
    kind: Literal["file"] = "file"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> bytes | None:
        """The file's bytes; None when it was sent by URL."""
        if self.url:
            return None
        return base64.b64decode(self.data_base64)

    @property
    def size(self) -> int | None:
        """Size in bytes without decoding; None when sent by URL."""
        if self.url:
            return None
        padding = self.data_base64[-2:].count("=")
        return len(self.data_base64) * 3 // 4 - padding


@dataclass
class DataPart:
    """Structured data the user sent: any JSON value."""

    data: Any
    kind: Literal["data"] = "data"
    metadata: dict[str, Any] = field(default_factory=dict)


InputPart = TextPart | FilePart | DataPart


@dataclass
class TaskInput:
    """Everything an adapter gets about one task; plain data, serialisable as JSON.

    `text` is the message's text parts joined; `parts` is the whole message,
    text, files and data in the order sent. `partial` is the answer text that
    earlier attempts of this turn already streamed and the task store holds
    (`""` on a first attempt, or when nothing of the answer was stored): an
    adapter with `continues_partial = True` yields only what comes after it.
    """

    task_id: str
    context_id: str
    text: str
    history: list[tuple[str, str]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    message_id: str = ""
    parts: list[TextPart | FilePart | DataPart] = field(default_factory=list)
    partial: str = ""

    @property
    def files(self) -> list[FilePart]:
        return [p for p in self.parts if isinstance(p, FilePart)]

    @property
    def data(self) -> list[Any]:
        """The values of the message's data parts."""
        return [p.data for p in self.parts if isinstance(p, DataPart)]


@dataclass
class AdapterConfig:
    """Start-up configuration handed to `BaseAdapter.setup`."""

    workspace_id: str
    data_dir: Path
    model: str = ""
    system_prompt: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    # The task store's database URL as the runtime resolved it (TASK_STORE_URL or
    # --task-store-url; else the SQLite file in the data dir), for an adapter that
    # keeps its own state beside the tasks. "" when set up outside the runtime.
    # Not in repr: it may hold a database password.
    task_store_url: str = field(default="", repr=False)


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

    # True: the adapter answers with a plain Message instead of a Task (quick,
    # stateless answers). Such replies are not stored (no GetTask, no history),
    # run directly even in durable mode, and are not retried.
    replies_with_message: bool = False

    # True: a retried attempt continues the answer instead of restarting it. The
    # attempt gets what earlier attempts of the turn streamed and stored in
    # `TaskInput.partial` and yields only the text that comes after it; the
    # runtime keeps the stored answer and appends, so no client sees the answer
    # taken back. False (the default): a retry's answer replaces the earlier one.
    continues_partial: ClassVar[bool] = False

    def replies_with_message_to(self, message: TaskInput) -> bool:
        """Whether this new message is answered with a Message (True) or a task
        (False), decided per message before anything runs. The default is
        `replies_with_message`. `message` is the input `stream()` would get,
        without `history` (it is not read for this decision); an answer to a
        task's question always continues the task."""
        return self.replies_with_message

    @abc.abstractmethod
    def stream(self, task: TaskInput) -> AsyncIterator[str | Output | InputRequired]:
        """Yield the answer (implement as an async generator).

        Text chunks (`str`) stream into the answer artifact; `TextOutput`,
        `FileOutput` and `DataOutput` (molecule_runtime.adapters.outputs) add
        text, files and data, to the answer or to a named `Artifact`. Yield
        last `InputRequired("question")` to ask the user for more input,
        `Done("message")` to complete with a status message, or
        `Reject("reason")` to refuse the request.
        """

    def description(self) -> str:
        """One line for the agent card; override to describe the agent."""
        return f"{self.name()} agent served by molecule-runtime"

    def input_modes(self) -> list[str]:
        """Media types the agent takes, for the agent card; override to name the
        ones it acts on (e.g. "text/csv")."""
        return list(DEFAULT_MODES)

    def output_modes(self) -> list[str]:
        """Media types the agent answers with, for the agent card."""
        return list(DEFAULT_MODES)
