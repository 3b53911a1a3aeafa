"""The task store's database engine: SQLite (WAL, busy timeout) or PostgreSQL,
schema creation serialised between processes, and the write probe that says
whether the store takes a write now."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

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

from molecule_runtime.config_checks import redact_url
from molecule_runtime.file_lock import sqlite_init_lock
from molecule_runtime.store import driver_notes  # noqa: F401 - installs its log filter

_LOCK_KEY = "molecule_runtime.schema"
SQLITE_BUSY_TIMEOUT_MS = 30000

# SQLAlchemy's default pool (5 + 10 connections) is kept: a larger one keeps
# its idle connections (and their file descriptors) open after a burst. Under
# a burst, tasks wait for a connection a little longer instead of failing.
_POOL = {"pool_timeout": 60}

# One row, written by the probes: whether the store takes a write, not only a
# connection (a read-only, locked or full database still answers SELECT 1).
_PROBE_METADATA = MetaData()
_PROBE = Table(
    "molecule_store_probe",
    _PROBE_METADATA,
    Column("id", Integer, primary_key=True),
    Column("checked_at", DateTime, nullable=True),
)


async def create_probe(engine: AsyncEngine) -> None:
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
async def schema_lock(engine: AsyncEngine, url: str) -> AsyncIterator[None]:
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
    if engine.dialect.name != "sqlite":
        yield
        return
    async with sqlite_init_lock(url.removeprefix("sqlite+aiosqlite:///")):
        yield


def engine_for(url: str) -> AsyncEngine:
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
