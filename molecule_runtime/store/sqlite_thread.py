"""SQLite work of the task store run whole in a thread, not statement by statement
on the event loop.

Through aiosqlite every statement (and the connection check-out, cursor, fetch,
close) is a round trip between the event loop and the connection's thread; under
load each waits for a turn of the busy loop. A read of one task cost ~3-4 ms of
CPU that way and ~0.8 ms as one call in a thread (measured), and a group commit
of 100 tasks held state changes back for as long as the loop took to get round
to its statements. The same database file, the same rows; PostgreSQL keeps the
async driver (its round trips are real network I/O).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


class SQLiteThread:
    """A synchronous engine on the async engine's SQLite file, with threads to run it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Writes in order, one at a time (SQLite has one writer anyway); reads beside them.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="task-store-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="task-store-reader")

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> SQLiteThread | None:
        """None unless `engine` is a file-backed SQLite database."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        sync = create_engine(
            url.set(drivername="sqlite"),
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(sync, "connect")
        def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return cls(sync)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """`fn` inside one transaction, committed (rolled back if it raises)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._in_tx, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._connected, fn)

    def _in_tx(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    def _connected(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
