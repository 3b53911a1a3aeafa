"""Opens the task store named by TASK_STORE_URL: SQLite by default, memory or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from a2a.server.cluster import LegacyTaskStoreAdapter, VersionedDatabaseTaskStore
from a2a.server.tasks import (
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    PushNotificationConfigStore,
)
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from molecule_runtime.config import Settings, redact_url
from molecule_runtime.store.event_log import LiveEventOffsets, TaskEventLog
from molecule_runtime.store.group_commit import GroupCommitTaskStore
from molecule_runtime.store.message_ids import MessageIds
from molecule_runtime.store.observed import ObservedTaskStore
from molecule_runtime.store.owners import TaskOwners
from molecule_runtime.store.push_configs import DatabasePushConfigs
from molecule_runtime.store.retention import (
    prune_message_ids_periodically,
    prune_periodically,
)

# How often the shared reader of a followed task polls the event log for
# writes made by other processes (writes made here wake it at once).
EVENT_POLL_INTERVAL = 1.0

_LOCK_KEY = "molecule_runtime.schema"

# SQLAlchemy's default pool (5 + 10 connections) is kept: a larger one keeps
# its idle connections (and their file descriptors) open after a burst. Under
# a burst, tasks wait for a connection a little longer instead of failing.
_POOL = {"pool_timeout": 60}


class StoreConfigError(ValueError):
    """TASK_STORE_URL names something the runtime cannot use."""


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

    async def check(self) -> None:
        """Raise if the store cannot be reached."""
        if self.engine is not None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        for pruner in (self._pruner, self._message_id_pruner):
            if pruner is not None:
                pruner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruner
        if self._group_commit is not None:
            await self._group_commit.aclose()
        if self.engine is not None:
            await self.engine.dispose()


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        # WAL lets readers (GetTask, ListTasks) proceed while a task streams.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


@contextlib.asynccontextmanager
async def _schema_lock(engine: AsyncEngine, url: str) -> AsyncIterator[None]:
    """Serialise schema creation between processes starting at the same moment.

    Replicas and workers started together on an empty database would otherwise
    race in CREATE TABLE and some would crash.
    """
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": _LOCK_KEY})
            try:
                yield
            finally:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": _LOCK_KEY}
                )
        return
    db_path = url.removeprefix("sqlite+aiosqlite:///")
    if engine.dialect.name != "sqlite" or not db_path or db_path == ":memory:":
        yield
        return
    with open(f"{db_path}.init-lock", "a+") as lock_file:
        await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        if not url.startswith("sqlite+aiosqlite:///"):
            raise StoreConfigError(
                f"TASK_STORE_URL={url!r}: SQLite URLs must use the async driver, "
                "e.g. sqlite+aiosqlite:///path/to/tasks.db"
            )
        db_path = url.removeprefix("sqlite+aiosqlite:///")
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **_POOL)
        _sqlite_pragmas(engine)
        return engine
    if url.startswith("postgresql+asyncpg://"):
        return create_async_engine(url, pool_pre_ping=True, **_POOL)
    raise StoreConfigError(
        f"TASK_STORE_URL={redact_url(url)!r} is not supported: use 'memory', "
        "'sqlite+aiosqlite:///<file>' or 'postgresql+asyncpg://user:pass@host/db'"
    )


async def open_stores(
    url: str,
    *,
    event_retention: float = 7 * 86400.0,
    push_encryption_key: str | None = None,
    idempotency_retention: float = 86400.0,
) -> Stores:
    """Open (and create the schema of) the store; `event_retention` 0 keeps events forever;
    with `push_encryption_key` (Fernet) push configs are encrypted in the database;
    message ids are remembered for `idempotency_retention` seconds (0: forever)."""
    if url == "memory":
        tasks_in_memory = InMemoryTaskStore()
        memory = ObservedTaskStore(
            LegacyTaskStoreAdapter(tasks_in_memory), TaskOwners(memory=tasks_in_memory)
        )
        return Stores(
            memory,
            None,
            InMemoryPushNotificationConfigStore(),
            None,
            "memory (lost on restart)",
            message_ids=MessageIds(retention=idempotency_retention),
        )
    engine = _engine(url)
    database = VersionedDatabaseTaskStore(engine)
    group_commit = GroupCommitTaskStore(database, engine)
    event_log = TaskEventLog(
        engine, poll_interval_s=EVENT_POLL_INTERVAL, unstored=group_commit.unstored_events
    )
    push_configs = DatabasePushConfigs(engine, encryption_key=push_encryption_key)
    message_ids = MessageIds(engine, retention=idempotency_retention)
    try:
        async with _schema_lock(engine, url):
            await database.initialize()
            await event_log.initialize()
            await push_configs.initialize()
            await message_ids.initialize()
    except Exception:
        await engine.dispose()
        raise
    tasks = ObservedTaskStore(group_commit, TaskOwners(engine=engine))
    stores = Stores(
        tasks,
        event_log,
        push_configs,
        engine,
        redact_url(url),
        message_ids=message_ids,
        _group_commit=group_commit,
    )
    loop = asyncio.get_running_loop()
    if event_retention > 0:
        stores._pruner = loop.create_task(
            prune_periodically(engine, event_retention), name="prune-task-events"
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
    )
