"""In-process registry: task id -> the live objects Temporal history cannot carry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from molecule_runtime.execution.events import TaskEvents

if TYPE_CHECKING:
    from molecule_runtime.durable.early import EarlyAttempt


@dataclass
class LiveTask:
    """A task accepted by this process whose client stream is open here."""

    events: TaskEvents
    handle: Any = None  # temporalio WorkflowHandle once the workflow is accepted
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when this process asked Temporal to cancel the task: its llm_call
    # heartbeats often until the cancel request comes back on a reply.
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    # Set with `handle`: a cancel that came while the workflow was being started waits for it.
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the workflow's first task (task_receive), or else its first
    # llm_call attempt, ran here.
    received: asyncio.Event = field(default_factory=asyncio.Event)
    # The first attempt, begun while the workflow started (durable/early.py).
    early: EarlyAttempt | None = None

    def attach(self, handle: Any) -> None:
        self.handle = handle
        self.accepted.set()


class LiveTaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, LiveTask] = {}

    def get(self, task_id: str) -> LiveTask | None:
        return self._tasks.get(task_id)

    def __len__(self) -> int:
        return len(self._tasks)

    @contextmanager
    def register(self, events: TaskEvents) -> Iterator[LiveTask]:
        """Holds the entry for the duration of the block, whatever its outcome."""
        entry = LiveTask(events=events)
        self._tasks[events.task_id] = entry
        try:
            yield entry
        finally:
            entry.finished.set()
            if self._tasks.get(events.task_id) is entry:
                del self._tasks[events.task_id]


async def until_any(events: tuple[asyncio.Event, ...], timeout: float) -> None:
    """Until one of `events` is set, at most `timeout` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
