"""One process at a time through the creation of tables in a shared SQLite file:
the task store's schema (store/engines.py) and the LangGraph adapter's
checkpoint tables (adapters/langgraph/checkpoints.py) take the same lock file."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def sqlite_init_lock(db_path: str) -> AsyncIterator[None]:
    """Processes sharing the SQLite file `db_path` pass one at a time (a lock file
    beside it); a database in memory needs none."""
    if not db_path or db_path == ":memory:":
        yield
        return
    with open(f"{db_path}.init-lock", "a+") as lock_file:
        await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
