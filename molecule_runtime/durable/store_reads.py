"""A stage's reads of the task store, waited for while the store is away."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from a2a.server.cluster import VersionedTaskStore
from temporalio import activity

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
