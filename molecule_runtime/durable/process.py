"""Durable mode for one process, built complete: the connection to Temporal, the
workers on this event loop, the in-process registry of live tasks and the client
side of tasks (what dispatch calls, through `DurableRoute`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.config import Settings
from molecule_runtime.durable.activities import TaskActivities
from molecule_runtime.durable.client import DurableTasks
from molecule_runtime.durable.connection import TemporalConnection
from molecule_runtime.durable.registry import LiveTaskRegistry
from molecule_runtime.durable.types import TaskRef
from molecule_runtime.durable.worker import TaskWorkers
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.execution.run_settings import RunSettings
from molecule_runtime.store import LiveEventOffsets, ObservedTaskStore
from molecule_runtime.vocabulary import ServiceMode

log = logging.getLogger(__name__)


class DurableRoute:
    """`DurableTasks` as dispatch calls it (execution/route.py `DurableRoute`):
    execution names a turn by its ids and imports nothing of durable/."""

    def __init__(self, tasks: DurableTasks) -> None:
        self.tasks = tasks

    def accepting(self) -> bool:
        return self.tasks.accepting()

    async def run(
        self,
        task_id: str,
        context_id: str,
        message_id: str,
        events: TaskEvents,
        first_input: Callable[[], Awaitable[TaskInput]] | None = None,
    ) -> bool:
        return await self.tasks.run(TaskRef(task_id, context_id, message_id), events, first_input)

    async def resume(
        self, task_id: str, context_id: str, message_id: str, events: TaskEvents
    ) -> bool:
        return await self.tasks.resume(TaskRef(task_id, context_id, message_id), events)

    async def cancel(self, task_id: str) -> bool:
        return await self.tasks.cancel(task_id)


class DurableProcess:
    def __init__(
        self,
        settings: Settings,
        adapter: BaseAdapter,
        store: ObservedTaskStore,
        *,
        run: RunSettings,
        accept_tasks: bool,
        offsets: LiveEventOffsets | None = None,
    ) -> None:
        self.settings = settings
        self.registry = LiveTaskRegistry()
        activities = TaskActivities(
            adapter,
            store,
            self.registry,
            # Each heartbeat is a write in Temporal: once a second (a cancel
            # asked here hurries them; one asked on another replica waits for one).
            heartbeat_interval=min(1.0, settings.temporal_heartbeat_timeout / 3),
            workspace_id=run.workspace_id,
            batch_window=run.batch_window,
            history_bytes=run.history_bytes,
            max_file_bytes=run.max_file_bytes,
        )
        self.connection = TemporalConnection(
            settings, TaskWorkers(settings, activities, accept_tasks=accept_tasks)
        )
        self.tasks = DurableTasks(
            settings,
            self.connection,
            self.registry,
            accept_tasks=accept_tasks,
            store=store,
            offsets=offsets,
            begin_early=activities.begin_early if settings.temporal_early_attempt else None,
        )
        activities.handover = self.tasks.handover
        self.route = DurableRoute(self.tasks)

    async def open(self) -> DurableProcess:
        """Connect (or note that Temporal is out of reach: tasks then run directly)."""
        await self.connection.open()
        return self

    async def close(self) -> None:
        """Stop the workers and the connection, within the shutdown grace: a worker
        whose Temporal is gone would wait for it without end. What is left is dropped
        with the process (Temporal retries the activities it held elsewhere)."""
        closing = asyncio.ensure_future(self.connection.close())
        try:
            await asyncio.wait_for(asyncio.shield(closing), max(1.0, self.settings.shutdown_grace))
        except TimeoutError:
            log.warning(
                "durable mode: Temporal workers did not stop within %.1f s (is Temporal "
                "reachable? %s); exiting without them",
                max(1.0, self.settings.shutdown_grace),
                self.connection.last_error or "no error recorded",
            )

    @property
    def mode(self) -> ServiceMode:
        return ServiceMode.DURABLE if self.connection.healthy else ServiceMode.DIRECT_FALLBACK

    def status(self) -> dict[str, Any]:
        return {
            **self.connection.status(),
            "live_tasks": len(self.registry),
            "fallbacks": self.tasks.fallbacks,
        }
