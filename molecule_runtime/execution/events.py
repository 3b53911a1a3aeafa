"""Builds the A2A events of a task and hands them to a sink.

The same emitter serves the live path (events go to the SDK's event queue,
which streams them to the client and persists them) and the headless path
(events are applied to the task store directly, e.g. after a crash).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from molecule_runtime.adapters.base import NonRetryableError
from molecule_runtime.execution.usage import UsageLedger
from molecule_runtime.sdk_seam import expect_snapshot_relay
from molecule_runtime.states import TERMINAL_STATES
from molecule_runtime.vocabulary import Meta

if TYPE_CHECKING:
    from molecule_runtime.store.steps import StepStore

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "FileTooLarge",
    "TaskEvents",
    "TaskStopped",
    "artifact_id_for",
    "named_artifact_id",
    "of_turn",
]

Deliver = Callable[[Any], Awaitable[None]]

# Largest file an adapter may output as bytes unless MOLECULE_MAX_FILE_BYTES says otherwise.
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024


class FileTooLarge(NonRetryableError):
    """A file output is larger than MOLECULE_MAX_FILE_BYTES (no retry makes it smaller)."""


class TaskStopped(Exception):
    """The task was finished by someone else (e.g. canceled) while this attempt ran."""


class EventsDropped(Exception):
    """The client's stream closed (the server is shutting down) before these events
    were stored: the attempt must not be reported done; a retry restarts the answer."""


def artifact_id_for(task_id: str, turn: int = 1) -> str:
    """One answer artifact per turn of a task, with an id every attempt and process agrees on."""
    return f"{task_id}-answer" if turn <= 1 else f"{task_id}-answer-{turn}"


def named_artifact_id(answer_id: str, name: str) -> str:
    """The id of a turn's artifact called `name`: derived from the turn's answer
    artifact id, so every attempt agrees on it and the turn's artifacts share a prefix."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-") or "artifact"
    return f"{answer_id}.{slug}"


def of_turn(answer_id: str, artifact_id: str) -> bool:
    """True for the answer artifact of a turn and the turn's named artifacts."""
    return artifact_id == answer_id or artifact_id.startswith(answer_id + ".")


def _has_content(part: Part) -> bool:
    return bool(part.text) if part.WhichOneof("content") == "text" else True


def _status(state: TaskState, message: Message | None = None) -> TaskStatus:
    status = TaskStatus(state=state)
    if message is not None:
        status.message.CopyFrom(message)
    status.timestamp.FromDatetime(datetime.now(UTC))
    return status


class TaskEvents:
    """Emits the events of one task through `deliver`."""

    def __init__(
        self,
        task_id: str,
        context_id: str,
        deliver: Deliver,
        artifact_id: str | None = None,
        persisted: Callable[[], Awaitable[None]] | None = None,
        settled: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.task_id = task_id
        self.context_id = context_id
        self.artifact_id = artifact_id or artifact_id_for(task_id)
        self._deliver = deliver
        self._persisted = persisted
        self._settled = settled
        # Set when the task stops to wait for the user's answer.
        self.input_required = asyncio.Event()
        # Set once the task is reported working.
        self.working = asyncio.Event()
        self.terminal_state: TaskState | None = None
        self.chunks_sent = 0
        self.first_chunk_at: float | None = None
        # What the task's attempts reported (report_usage); seeded from the
        # stored task by whoever knows it, written back with status updates.
        self.usage = UsageLedger()
        # Artifacts (id: name) this emitter wrote, and a reader of the stored
        # task's, so a retry can empty the ones it does not write again.
        self.artifact_names: dict[str, str] = {}
        self.stored_artifacts: Callable[[], Awaitable[dict[str, str]]] | None = None
        # Largest file (bytes) an adapter may output; the executor sets the configured one.
        self.max_file_bytes = DEFAULT_MAX_FILE_BYTES
        # The task store's step journal: an attempt's durable steps (adapters/steps.py).
        self.steps: StepStore | None = None
        # A reader of the stored task, where the step journal's store cannot read
        # a turn's artifacts itself (the memory store): what a retry continues.
        self.stored_task: Callable[[], Awaitable[Task | None]] | None = None

    async def persisted(self) -> None:
        """Return once every event delivered so far is in the task store."""
        if self._persisted is not None:
            await self._persisted()

    async def earlier_artifacts(self) -> dict[str, str]:
        """The artifacts (id: name) written to this task so far, as far as known here."""
        known = dict(self.artifact_names)
        if self.stored_artifacts is not None:
            known.update(await self.stored_artifacts())
        return known

    async def settled(self) -> None:
        """Return once every event delivered so far has been taken by the store
        (stored, or queued to be stored behind the stream)."""
        if self._settled is not None:
            await self._settled()

    def agent_message(self, text: str, kind: str | None = None) -> Message:
        message = Message(
            role=Role.ROLE_AGENT,
            message_id=str(uuid.uuid4()),
            task_id=self.task_id,
            context_id=self.context_id,
            parts=[Part(text=text)],
        )
        if kind:
            message.metadata.update({Meta.MESSAGE_KIND: kind})
        return message

    async def created(
        self,
        user_message: Message | None,
        state: TaskState = TaskState.TASK_STATE_SUBMITTED,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """The Task itself: the first event of every task."""
        task = Task(
            id=self.task_id,
            context_id=self.context_id,
            status=_status(state),
        )
        # Tasks carry no creation time of their own; the console shows ages from it.
        task.metadata.update({Meta.CREATED: task.status.timestamp.ToJsonString()})
        if metadata:
            task.metadata.update(metadata)
        if user_message is not None:
            task.history.append(user_message)
        await self._deliver(task)

    async def status(
        self, state: TaskState, text: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        kind = Meta.QUESTION if state == TaskState.TASK_STATE_INPUT_REQUIRED else None
        message = self.agent_message(text, kind) if text else None
        if state in TERMINAL_STATES:
            if self.terminal_state is not None:
                return
            self.terminal_state = state
        await self._deliver(
            TaskStatusUpdateEvent(
                task_id=self.task_id,
                context_id=self.context_id,
                status=_status(state, message),
                metadata=metadata,
            )
        )
        if state == TaskState.TASK_STATE_INPUT_REQUIRED:
            self.input_required.set()
        elif state == TaskState.TASK_STATE_WORKING:
            self.working.set()

    async def relay(self, task: Task) -> None:
        """Stream the task as another process stored it (e.g. its question): the
        SDK passes a `Task` of an existing task to the client without storing it again."""
        expect_snapshot_relay(self.task_id)
        await self._deliver(task)
        if task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
            self.input_required.set()

    async def chunk(self, text: str, *, append: bool, last: bool = False) -> None:
        """A text chunk of the turn's answer artifact."""
        await self.artifact(
            self.artifact_id, "answer", [Part(text=text)], append=append, last=last
        )

    async def artifact(
        self,
        artifact_id: str,
        name: str,
        parts: list[Part],
        *,
        append: bool,
        last: bool = False,
        description: str = "",
    ) -> None:
        """Parts for an artifact: appended to it, or (append=False) replacing it whole."""
        await self._deliver(
            TaskArtifactUpdateEvent(
                task_id=self.task_id,
                context_id=self.context_id,
                artifact=Artifact(
                    artifact_id=artifact_id, name=name, description=description, parts=parts
                ),
                append=append,
                last_chunk=last,
            )
        )
        self.artifact_names[artifact_id] = name
        self.chunks_sent += 1
        if self.first_chunk_at is None and any(_has_content(p) for p in parts):
            self.first_chunk_at = time.monotonic()
