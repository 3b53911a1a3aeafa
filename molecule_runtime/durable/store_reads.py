"""A stage's reads of the task store, waited for while the store is away."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from a2a.server.cluster import VersionedTaskStore
from temporalio import activity
from temporalio.exceptions import ApplicationError

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.durable.types import TaskRef
from molecule_runtime.execution.inputs import InputNotStored, load_task_input
from molecule_runtime.store.health import RETRY_MAX, StoreHealth, until_stored

_T = TypeVar("_T")


async def read_while_store_away(
    store: VersionedTaskStore, read: Callable[[], Awaitable[_T]], heartbeat_interval: float
) -> _T:
    """What a stage reads from the task store, waited for while the store is
    away: an outage of the runtime's own dependency costs time, never an
    attempt of TEMPORAL_MAX_ATTEMPTS. A regular activity heartbeats while it
    waits; a local one cannot, its start-to-close timeout bounds the wait."""
    local = activity.info().is_local
    health: StoreHealth | None = getattr(store, "health", None)

    async def heartbeat() -> None:
        if not local:
            activity.heartbeat()

    return await until_stored(read, health, pause=heartbeat, max_delay=min(RETRY_MAX, heartbeat_interval))


async def stored_input(
    store: VersionedTaskStore, ref: TaskRef, history_bytes: int, heartbeat_interval: float
) -> TaskInput:
    """The adapter's input, rebuilt from the task store as the request path built it."""
    read = functools.partial(load_task_input, store, ref.task_id, ref.message_id, history_bytes)
    try:
        return await read_while_store_away(store, read, heartbeat_interval)
    except InputNotStored as exc:
        # Not stored yet (another process is still writing it): retried.
        raise ApplicationError(str(exc), type=type(exc).__name__) from exc
