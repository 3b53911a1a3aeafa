"""Opens the task store named by TASK_STORE_URL: SQLite by default, memory or PostgreSQL.

The database engine, its schema lock and the write probe are store/engines.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass, field

from a2a.server.cluster import LegacyTaskStoreAdapter, VersionedDatabaseTaskStore
from a2a.server.tasks import (
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    PushNotificationConfigStore,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.config import Settings
from molecule_runtime.config_checks import redact_url
from molecule_runtime.store.engines import (
    create_probe,
    engine_for,
    schema_lock,
    write_probe,
)
from molecule_runtime.store.event_log import LiveEventOffsets, TaskEventLog
from molecule_runtime.store.failures import StoreUnavailable, is_transient, reason_of
from molecule_runtime.store.group_commit import GroupCommitTaskStore
from molecule_runtime.store.health import StoreHealth
from molecule_runtime.store.message_ids import MessageIds
from molecule_runtime.store.observed import ObservedTaskStore
from molecule_runtime.store.owners import TaskOwners
from molecule_runtime.store.push_configs import DatabasePushConfigs
from molecule_runtime.store.retention import (
    prune_message_ids_periodically,
    prune_periodically,
)
from molecule_runtime.store.steps import DEFAULT_STEP_MAX_BYTES, StepStore

# How often the shared reader of a followed task polls the event log for
# writes made by other processes (writes made here wake it at once).
EVENT_POLL_INTERVAL = 1.0

# How long /readyz's write probe may take before it says the store cannot write.
READY_PROBE_TIMEOUT = 3.0


@dataclass
class Stores:
    """The task store in the shapes its users need."""

    tasks: ObservedTaskStore  # every reader and writer: the SDK handler, the runtime
    event_log: TaskEventLog | None  # cross-process event log (database stores)
    push_configs: PushNotificationConfigStore
    engine: AsyncEngine | None
    description: str
    live_offsets: LiveEventOffsets = field(default_factory=LiveEventOffsets)
    # Which task each (sender, messageId) was taken into: exactly-once sends.
    message_ids: MessageIds = field(default_factory=MessageIds)
    _group_commit: GroupCommitTaskStore | None = None
    _pruner: asyncio.Task[None] | None = None
    _message_id_pruner: asyncio.Task[None] | None = None

    health: StoreHealth = field(default_factory=StoreHealth)

    async def check(self) -> None:
        """Raise if the store cannot take a write now (a real one: a database that
        answers reads may still be read-only, locked or out of disk)."""
        if self.engine is None:
            return
        async with asyncio.timeout(READY_PROBE_TIMEOUT):
            await write_probe(self.engine, busy_timeout_ms=int(READY_PROBE_TIMEOUT * 500))
        if not self.health.available:
            self.health.probe_passed()
            if not self.health.available:  # writes that wait still fail
                raise self.health.unavailable()

    async def write_status(self) -> tuple[bool, str]:
        """For /readyz: ("ok") or why the store cannot write now."""
        try:
            await self.check()
        except StoreUnavailable as exc:
            return False, f"cannot write: {exc.why} (for {self.health.down_for:.0f} s)"
        except TimeoutError:
            return False, "cannot write: no answer within the probe's time (locked or overloaded)"
        except Exception as exc:
            if not is_transient(exc):
                return False, f"cannot write: {type(exc).__name__}"
            why = reason_of(exc)
            if why != "locked":
                # New work is refused from now on, not only once a task's write fails.
                self.health.failed(exc)
            return False, f"cannot write: {why}"
        return True, "ok"

    async def aclose(self) -> None:
        for pruner in (self._pruner, self._message_id_pruner):
            if pruner is not None:
                pruner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruner
        if self._group_commit is not None:
            await self._group_commit.aclose()
        await self.health.aclose()
        if self.engine is not None:
            await self.engine.dispose()


async def open_stores(
    url: str,
    *,
    event_retention: float = 7 * 86400.0,
    push_encryption_key: str | None = None,
    idempotency_retention: float = 86400.0,
    step_max_bytes: int = DEFAULT_STEP_MAX_BYTES,
) -> Stores:
    """Open (and create the schema of) the store; `event_retention` 0 keeps events forever;
    with `push_encryption_key` (Fernet) push configs are encrypted in the database;
    message ids are remembered for `idempotency_retention` seconds (0: forever)."""
    if url == "memory":
        tasks_in_memory = InMemoryTaskStore()
        memory = ObservedTaskStore(
            LegacyTaskStoreAdapter(tasks_in_memory),
            TaskOwners(memory=tasks_in_memory),
            StepStore(max_bytes=step_max_bytes),
        )
        return Stores(
            memory,
            None,
            InMemoryPushNotificationConfigStore(),
            None,
            "memory (lost on restart)",
            message_ids=MessageIds(retention=idempotency_retention),
        )
    engine = engine_for(url)
    database = VersionedDatabaseTaskStore(engine)
    health = StoreHealth(functools.partial(write_probe, engine))
    group_commit = GroupCommitTaskStore(database, engine, health)
    steps = StepStore(engine, health, max_bytes=step_max_bytes)

    def unstored(task_id: str, after: int) -> list[tuple[int, bytes]]:
        # A task streaming write-ahead is served only what is committed.
        return [] if steps.writes_ahead(task_id) else group_commit.unstored_events(task_id, after)

    event_log = TaskEventLog(engine, poll_interval_s=EVENT_POLL_INTERVAL, unstored=unstored)
    push_configs = DatabasePushConfigs(engine, encryption_key=push_encryption_key)
    message_ids = MessageIds(engine, retention=idempotency_retention, health=health)
    try:
        async with schema_lock(engine, url):
            await database.initialize()
            await event_log.initialize()
            await push_configs.initialize()
            await message_ids.initialize()
            await steps.initialize()
            await create_probe(engine)
    except Exception:
        await engine.dispose()
        raise
    tasks = ObservedTaskStore(group_commit, TaskOwners(engine=engine), steps)
    stores = Stores(
        tasks,
        event_log,
        push_configs,
        engine,
        redact_url(url),
        message_ids=message_ids,
        health=health,
        _group_commit=group_commit,
    )
    loop = asyncio.get_running_loop()
    if event_retention > 0:
        stores._pruner = loop.create_task(
            prune_periodically(engine, event_retention, steps), name="prune-task-events"
        )
    if idempotency_retention > 0:
        stores._message_id_pruner = loop.create_task(
            prune_message_ids_periodically(message_ids, idempotency_retention),
            name="prune-message-ids",
        )
    # Live offsets and follower wake-ups see every write, whoever made it.
    tasks.observe(stores.live_offsets.record)
    tasks.observe(event_log.wake)
    return stores


async def open_configured_stores(settings: Settings) -> Stores:
    key = settings.push_encryption_key
    return await open_stores(
        settings.resolved_task_store_url,
        event_retention=settings.event_retention,
        push_encryption_key=key.get_secret_value() if key is not None else None,
        idempotency_retention=settings.idempotency_retention,
        step_max_bytes=settings.step_max_bytes,
    )
