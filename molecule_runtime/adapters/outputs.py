"""What an adapter's `stream()` may yield besides text chunks (`str`).

Everything here is plain data: the runtime turns it into A2A artifacts and
status updates (execution/attempt.py), the same way in direct and durable mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANSWER = "answer"


@dataclass(frozen=True)
class Artifact:
    """Names the artifact an output goes to.

    The runtime derives the artifact's id from its name and the turn, so every
    attempt (and every process) writes the same artifact: a retry replaces it.
    Outputs without an artifact go to the turn's answer artifact ("answer").
    """

    name: str
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("an Artifact needs a name")


@dataclass(frozen=True)
class TextOutput:
    """A text chunk for a named artifact (a bare `str` goes to the answer).
    Chunks for one artifact append to each other, as streamed text does."""

    text: str
    artifact: Artifact | None = None


@dataclass(frozen=True)
class FileOutput:
    """A file: its bytes (`data`) or a `url` where the client can fetch it.

    Bytes are stored with the task; more than MOLECULE_MAX_FILE_BYTES fails the
    attempt (for large files, store them elsewhere and yield a `url`).
    """

    name: str
    media_type: str = "application/octet-stream"
    data: bytes | None = None
    url: str | None = None
    artifact: Artifact | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ValueError("a FileOutput has either data (bytes) or a url")


@dataclass(frozen=True)
class DataOutput:
    """Structured data: any JSON value (dict, list, str, number, bool, None)."""

    data: Any
    artifact: Artifact | None = None


@dataclass(frozen=True)
class Done:
    """Yielded last: the task completes with `message` as its status message."""

    message: str


@dataclass(frozen=True)
class Reject:
    """Yielded last: the agent refuses the request. The task ends `rejected`
    with `reason` as its status message (a failure is something else: raise)."""

    reason: str


Output = TextOutput | FileOutput | DataOutput | Done | Reject
