"""The A2A task store: SQLite by default, in memory or PostgreSQL on request."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from a2a.server.cluster import (
    DatabaseTaskEventStream,
    LegacyTaskStoreAdapter,
    TaskEventStream,
    VersionedDatabaseTaskStore,
    VersionedTaskStore,
)
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from molecule_runtime.config import redact_url

# How often a subscriber to a task running in another process (or being
# recovered headless) polls the shared event log.
EVENT_POLL_INTERVAL = 0.2

_LOCK_KEY = "molecule_runtime.schema"


class StoreConfigError(ValueError):
    """TASK_STORE_URL names something the runtime cannot use."""


@dataclass
class Stores:
    """The task store in the shapes its users need."""

    handler_store: TaskStore | VersionedTaskStore  # given to the SDK request handler
    versioned: VersionedTaskStore  # read and written by the runtime (history, headless)
    event_stream: TaskEventStream | None  # cross-process event log (database stores)
    engine: AsyncEngine | None
    description: str

    async def check(self) -> None:
        """Raise if the store cannot be reached."""
        if self.engine is not None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
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


async def open_stores(url: str) -> Stores:
    if url == "memory":
        memory = InMemoryTaskStore()
        return Stores(memory, LegacyTaskStoreAdapter(memory), None, None, "memory (lost on restart)")
    if url.startswith("sqlite"):
        if not url.startswith("sqlite+aiosqlite:///"):
            raise StoreConfigError(
                f"TASK_STORE_URL={url!r}: SQLite URLs must use the async driver, "
                "e.g. sqlite+aiosqlite:///path/to/tasks.db"
            )
        db_path = url.removeprefix("sqlite+aiosqlite:///")
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_pragmas(engine)
    elif url.startswith("postgresql+asyncpg://"):
        engine = create_async_engine(url, pool_pre_ping=True)
    else:
        raise StoreConfigError(
            f"TASK_STORE_URL={redact_url(url)!r} is not supported: use 'memory', "
            "'sqlite+aiosqlite:///<file>' or 'postgresql+asyncpg://user:pass@host/db'"
        )
    versioned = VersionedDatabaseTaskStore(engine)
    stream = DatabaseTaskEventStream(engine, poll_interval_s=EVENT_POLL_INTERVAL)
    try:
        async with _schema_lock(engine, url):
            await versioned.initialize()
            await stream.initialize()
    except Exception:
        await engine.dispose()
        raise
    return Stores(versioned, versioned, stream, engine, redact_url(url))
