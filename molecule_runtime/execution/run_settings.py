"""How this process runs a task's attempts, the same in direct and durable mode:
read from the settings once (services.py) and given to both paths."""

from __future__ import annotations

from dataclasses import dataclass

from molecule_runtime.config import Settings
from molecule_runtime.execution.events import DEFAULT_MAX_FILE_BYTES
from molecule_runtime.execution.inputs import DEFAULT_HISTORY_BYTES


@dataclass(frozen=True)
class RunSettings:
    workspace_id: str = ""  # names the agent on every stage span
    batch_window: float = 0.0  # seconds text chunks are merged into one event
    history_bytes: int = DEFAULT_HISTORY_BYTES  # the conversation's history budget
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # the largest file an adapter may send

    @classmethod
    def of(cls, settings: Settings) -> RunSettings:
        return cls(
            workspace_id=settings.workspace_id,
            batch_window=settings.stream_batch_window,
            history_bytes=settings.history_bytes,
            max_file_bytes=settings.max_file_bytes,
        )
