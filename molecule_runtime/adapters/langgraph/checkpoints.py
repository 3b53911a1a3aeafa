"""LangGraph checkpoints of the built-in adapter, in the runtime's own database.

One LangGraph thread per task turn: a retried attempt of the turn (after a
crash, a deploy, a replica hop, a retryable error) resumes the graph after its
last completed node, so a tool call that finished never runs again.

- SQLite task store: `langgraph-checkpoint-sqlite` on the same database file
  (tables `checkpoints` and `writes`);
- PostgreSQL task store: `langgraph-checkpoint-postgres` on the same database
  (tables `checkpoints`, `checkpoint_blobs`, `checkpoint_writes`,
  `checkpoint_migrations`), through psycopg;
- `TASK_STORE_URL=memory`: LangGraph's in-memory saver (lost on restart, as the
  tasks are).

Retention: the threads of finished tasks last updated more than
`MOLECULE_EVENT_RETENTION` ago are deleted, as the runtime deletes their event
log and step journal (in memory: threads started that long ago).

LangGraph's packages are imported when a checkpointer is opened, never at
module import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from molecule_runtime.adapters.steps import current_journal
from molecule_runtime.file_lock import sqlite_init_lock

log = logging.getLogger(__name__)

# Between the task id and the turn in a thread id. Task ids are UUIDs the
# runtime made, so the first separator ends the task id.
THREAD_SEPARATOR = ":"
# Serialises the PostgreSQL saver's migrations between replicas starting together.
_PG_SETUP_LOCK = "molecule-runtime:langgraph-checkpoints"
SQLITE_BUSY_TIMEOUT_S = 30.0


class CheckpointConfigError(ValueError):
    """The task store's URL names a database the checkpointer cannot use."""


def task_of_thread(thread_id: str) -> str:
    """The task id a thread id belongs to."""
    return thread_id.partition(THREAD_SEPARATOR)[0]


def turn_thread() -> tuple[str, bool]:
    """(thread id, inside a task) for the running attempt.

    Inside a task the thread is the task turn's (the step journal names the
    turn: every attempt of the turn agrees on it). Outside one (a unit test
    calling `stream()` itself) a fresh thread that nothing will resume.
    """
    journal = current_journal.get()
    task_id = getattr(journal, "task_id", None)
    turn = getattr(journal, "turn", None)
    if isinstance(task_id, str) and isinstance(turn, str) and task_id and turn:
        return f"{task_id}{THREAD_SEPARATOR}{turn}", True
    return f"unbound{THREAD_SEPARATOR}{uuid.uuid4().hex}", False


class Checkpoints:
    """A LangGraph checkpoint saver and what it takes to keep and prune it."""

    def __init__(self, saver: Any, kind: str, url: str, retention: float) -> None:
        self.saver = saver
        self.kind = kind  # "sqlite", "postgresql" or "memory"
        self._url = url
        self._retention = retention
        self._closers: list[Any] = []
        self._pruner: asyncio.Task[None] | None = None
        # Memory only: when each thread started, oldest first.
        self._started: dict[str, float] = {}

    # -- opening ---------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, *, retention: float) -> Checkpoints:
        """Checkpoints in the database `url` (a `TASK_STORE_URL`); `retention`
        seconds after a task finished its threads go (0: kept)."""
        if url == "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            return cls(InMemorySaver(), "memory", url, retention)
        if url.startswith("sqlite"):
            checkpoints = await cls._open_sqlite(url, retention)
        elif url.startswith("postgresql"):
            checkpoints = await cls._open_postgres(url, retention)
        else:
            raise CheckpointConfigError(
                "LangGraph checkpoints need a task store of SQLite, PostgreSQL or memory"
            )
        if retention > 0:
            checkpoints._pruner = asyncio.get_running_loop().create_task(
                checkpoints._prune_periodically(), name="prune-langgraph-checkpoints"
            )
        return checkpoints

    @classmethod
    async def _open_sqlite(cls, url: str, retention: float) -> Checkpoints:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from sqlalchemy.engine import make_url

        path = make_url(url).database or ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection, as the saver wants it (it serialises its statements);
        # it waits for the runtime's writers instead of failing "database is locked".
        conn = await aiosqlite.connect(path or ":memory:", timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            # As the runtime's connections: WAL, and a commit survives a crash
            # of the process (not of the machine) without an fsync per write.
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            saver = AsyncSqliteSaver(conn)
            async with sqlite_init_lock(path):
                await saver.setup()
        except BaseException:
            await conn.close()
            raise
        checkpoints = cls(saver, "sqlite", url, retention)
        checkpoints._closers.append(conn.close)
        return checkpoints

    @classmethod
    async def _open_postgres(cls, url: str, retention: float) -> Checkpoints:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        conninfo = psycopg_conninfo(url)
        kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo, kwargs=kwargs, min_size=1, max_size=10, open=False
        )
        await pool.open()
        try:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            # Replicas starting together on an empty database would race in
            # the saver's migrations (a duplicate version row fails one).
            async with await AsyncConnection.connect(conninfo, autocommit=True) as lock:
                await lock.execute("SELECT pg_advisory_lock(hashtext(%s))", (_PG_SETUP_LOCK,))
                try:
                    await saver.setup()
                finally:
                    await lock.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_PG_SETUP_LOCK,))
        except BaseException:
            await pool.close()
            raise
        checkpoints = cls(saver, "postgresql", url, retention)
        checkpoints._closers.append(pool.close)
        return checkpoints

    async def aclose(self) -> None:
        pruner, self._pruner = self._pruner, None
        if pruner is not None:
            pruner.cancel()
            with contextlib.suppress(BaseException):
                await pruner
        closers, self._closers = self._closers, []
        for close in closers:
            with contextlib.suppress(Exception):
                await close()

    # -- threads ---------------------------------------------------------------

    def started(self, thread_id: str) -> None:
        """A turn's thread is in use (memory: remember when, drop the expired ones)."""
        if self.kind != "memory" or self._retention <= 0:
            return
        now = time.monotonic()
        self._started.setdefault(thread_id, now)
        expired = []
        for thread, since in self._started.items():
            if now - since < self._retention:
                break
            expired.append(thread)
        for thread in expired:
            del self._started[thread]
            self.saver.delete_thread(thread)

    async def delete(self, thread_ids: Iterable[str]) -> int:
        deleted = 0
        for thread_id in thread_ids:
            await self.saver.adelete_thread(thread_id)
            self._started.pop(thread_id, None)
            deleted += 1
        return deleted

    # -- retention -------------------------------------------------------------

    async def prune(self, older_than: datetime) -> int:
        """Delete the threads of finished tasks last updated before `older_than`."""
        if self.kind == "memory":
            return 0
        threads = await self._thread_ids()
        if not threads:
            return 0
        by_task: dict[str, list[str]] = {}
        for thread in threads:
            by_task.setdefault(task_of_thread(thread), []).append(thread)
        finished = await finished_tasks(self._url, list(by_task), older_than)
        return await self.delete(t for task_id in finished for t in by_task[task_id])

    async def _thread_ids(self) -> list[str]:
        query = "SELECT DISTINCT thread_id FROM checkpoints"
        if self.kind == "sqlite":
            async with self.saver.lock, self.saver.conn.execute(query) as cursor:
                return [str(row[0]) for row in await cursor.fetchall()]
        async with self.saver.conn.connection() as conn:
            rows = await (await conn.execute(query)).fetchall()
            return [str(row["thread_id"]) for row in rows]

    async def _prune_periodically(self) -> None:
        # As often as the runtime prunes its event log and step journals.
        interval = min(max(self._retention / 4, 1.0), 3600.0)
        while True:
            await asyncio.sleep(interval)
            try:
                cutoff = datetime.now(UTC) - timedelta(seconds=self._retention)
                deleted = await self.prune(cutoff)
                if deleted:
                    log.info("deleted the LangGraph threads of %d finished task turns", deleted)
            except Exception:
                log.exception("pruning LangGraph checkpoints failed; retrying later")


async def finished_tasks(url: str, task_ids: list[str], older_than: datetime) -> list[str]:
    """Those of `task_ids` whose tasks are finished and were last updated before
    `older_than` (the rule the runtime's retention applies to event logs)."""
    from a2a.server.models import TaskModel
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from molecule_runtime.states import TERMINAL_STATE_NAMES

    # The SDK stores last_updated as naive UTC.
    cutoff = older_than.astimezone(UTC).replace(tzinfo=None)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S} if url.startswith("sqlite") else {}
    engine = create_async_engine(url, connect_args=connect_args, pool_size=1)
    finished: list[str] = []
    try:
        async with engine.connect() as conn:
            for start in range(0, len(task_ids), 500):
                rows = await conn.execute(
                    select(TaskModel.id, TaskModel.status).where(
                        TaskModel.id.in_(task_ids[start : start + 500]),
                        TaskModel.last_updated < cutoff,
                    )
                )
                finished.extend(
                    task_id
                    for task_id, status in rows
                    if isinstance(status, dict) and status.get("state") in TERMINAL_STATE_NAMES
                )
    finally:
        await engine.dispose()
    return finished


def psycopg_conninfo(url: str) -> str:
    """The libpq URL psycopg takes for a `postgresql+asyncpg://` task store URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    query = dict(parsed.query)
    # asyncpg spells libpq's sslmode `ssl`.
    ssl = query.pop("ssl", None)
    if ssl is not None and "sslmode" not in query:
        query["sslmode"] = ssl
    return parsed.set(query=query).render_as_string(hide_password=False)
