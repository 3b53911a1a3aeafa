"""Opens the task store named by TASK_STORE_URL: SQLite by default, memory or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from a2a.server.cluster import LegacyTaskStoreAdapter, VersionedDatabaseTaskStore
from a2a.server.tasks import (
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    PushNotificationConfigStore,
)
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from molecule_runtime.config import Settings, redact_url
from molecule_runtime.store.event_log import LiveEventOffsets, TaskEventLog
from molecule_runtime.store.group_commit import GroupCommitTaskStore
from molecule_runtime.store.health import StoreHealth, StoreUnavailable, is_transient, reason_of
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

_LOCK_KEY = "molecule_runtime.schema"
SQLITE_BUSY_TIMEOUT_MS = 30000

# SQLAlchemy's default pool (5 + 10 connections) is kept: a larger one keeps
# its idle connections (and their file descriptors) open after a burst. Under
# a burst, tasks wait for a connection a little longer instead of failing.
_POOL = {"pool_timeout": 60}
# How long /readyz's write probe may take before it says the store cannot write.
READY_PROBE_TIMEOUT = 3.0

# One row, written by the probes: whether the store takes a write, not only a
# connection (a read-only, locked or full database still answers SELECT 1).
_PROBE_METADATA = MetaData()
_PROBE = Table(
    "molecule_store_probe",
    _PROBE_METADATA,
    Column("id", Integer, primary_key=True),
    Column("checked_at", DateTime, nullable=True),
)


async def _create_probe(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_PROBE_METADATA.create_all)
        if (await conn.execute(select(_PROBE.c.id).where(_PROBE.c.id == 1))).first() is None:
            await conn.execute(insert(_PROBE).values(id=1, checked_at=None))


async def write_probe(engine: AsyncEngine, *, busy_timeout_ms: int | None = None) -> None:
    """One small write in a transaction of its own; raises when the store cannot write."""
    async with engine.begin() as conn:
        sqlite_wait = engine.dialect.name == "sqlite" and busy_timeout_ms is not None
        if sqlite_wait:
            # Not the writers' 30 s: a locked database answers the probe in time.
            await conn.exec_driver_sql(f"PRAGMA busy_timeout={int(busy_timeout_ms or 0)}")
        try:
            await conn.execute(
                update(_PROBE)
                .where(_PROBE.c.id == 1)
                .values(checked_at=datetime.now(UTC).replace(tzinfo=None))
            )
        finally:
            if sqlite_wait:
                await conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


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


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        # WAL lets readers (GetTask, ListTasks) proceed while a task streams.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
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
    engine = _engine(url)
    database = VersionedDatabaseTaskStore(engine)
    health = StoreHealth(functools.partial(write_probe, engine))
    group_commit = GroupCommitTaskStore(database, engine, health)
    event_log = TaskEventLog(
        engine, poll_interval_s=EVENT_POLL_INTERVAL, unstored=group_commit.unstored_events
    )
    push_configs = DatabasePushConfigs(engine, encryption_key=push_encryption_key)
    message_ids = MessageIds(engine, retention=idempotency_retention, health=health)
    steps = StepStore(engine, health, max_bytes=step_max_bytes)
    try:
        async with _schema_lock(engine, url):
            await database.initialize()
            await event_log.initialize()
            await push_configs.initialize()
            await message_ids.initialize()
            await steps.initialize()
            await _create_probe(engine)
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
