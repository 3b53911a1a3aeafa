"""What the three activities share: the adapter, the task store, the registry
of tasks whose client stream is here, and how a task is reached from them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from a2a.server.cluster import VersionedTaskStore
from a2a.types.a2a_pb2 import Task
from temporalio import activity

from molecule_runtime.adapters.base import BaseAdapter
from molecule_runtime.durable.registry import LiveTaskRegistry
from molecule_runtime.durable.running import RunningAttempts
from molecule_runtime.durable.store_reads import read_while_store_away
from molecule_runtime.execution.events import DEFAULT_MAX_FILE_BYTES, TaskEvents
from molecule_runtime.execution.headless import headless_events, stored_task
from molecule_runtime.execution.inputs import DEFAULT_HISTORY_BYTES
from molecule_runtime.vocabulary import Delivery, Mode

_T = TypeVar("_T")


class TaskAccess:
    """This process's adapter, task store and live registry, as the activities reach them."""

    def __init__(
        self,
        adapter: BaseAdapter,
        store: VersionedTaskStore,
        registry: LiveTaskRegistry,
        heartbeat_interval: float,
        workspace_id: str = "",
        batch_window: float = 0.0,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.history_bytes = history_bytes
        self.workspace_id = workspace_id
        self.batch_window = batch_window
        self.adapter = adapter
        self.store = store
        self.registry = registry
        self.heartbeat_interval = heartbeat_interval
        # The llm_call attempt of each task running in this process.
        self._running = RunningAttempts()
        # Set when this process hands its tasks over at shutdown (DurableTasks.handover).
        self.handover: asyncio.Event | None = None

    def _events(
        self, task_id: str, context_id: str, artifact_id: str = ""
    ) -> tuple[TaskEvents, Delivery]:
        entry = self.registry.get(task_id)
        if entry is not None:
            return entry.events, Delivery.LIVE
        events = headless_events(self.store, task_id, context_id, artifact_id)
        events.max_file_bytes = self.max_file_bytes
        return events, Delivery.HEADLESS

    async def _from_store(self, read: Callable[[], Awaitable[_T]]) -> _T:
        return await read_while_store_away(self.store, read, self.heartbeat_interval)

    async def _stored(self, task_id: str) -> Task | None:
        return await self._from_store(functools.partial(stored_task, self.store, task_id))

    def _span_attrs(self, delivery: Delivery) -> dict[str, str]:
        return {
            "mode": Mode.DURABLE,
            "delivery": delivery,
            "adapter": self.adapter.name(),
            "workspace_id": self.workspace_id,
        }

    def _received(self, task_id: str) -> None:
        entry = self.registry.get(task_id)
        if entry is not None and not entry.received.is_set():
            entry.received.set()
            if entry.early is not None:
                entry.early.restart_clock()

    def leaving(self) -> bool:
        """This process hands its tasks over (shutdown): it starts no attempt."""
        return activity.is_worker_shutdown() or (self.handover is not None and self.handover.is_set())
