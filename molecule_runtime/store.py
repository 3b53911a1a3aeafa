"""The A2A task store: SQLite by default, in memory or PostgreSQL on request."""

from __future__ import annotations

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
        await versioned.initialize()
        await stream.initialize()
    except Exception:
        await engine.dispose()
        raise
    return Stores(versioned, versioned, stream, engine, redact_url(url))
