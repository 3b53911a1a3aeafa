"""The task store through database outages: a PostgreSQL restart, a port that
answers 57P03 ("the database system is starting up") for a while, connections
cut mid-stream, refused connections, a full SQLite disk. Writes wait and are
retried; no pending write is dropped and no task fails because of it.

PostgreSQL runs as a cluster of this module's own (the tests stop it), behind a
small TCP proxy (tests/support/pg_proxy.py) that plays the outages.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import TaskState
from sqlalchemy import event

from molecule_runtime.store import Stores, open_stores
from molecule_runtime.store.claims_table import MessageClaim, now_utc
from molecule_runtime.store.failures import StoreUnavailable
from molecule_runtime.store.pending import TaskNotStored
from tests.support.pg_proxy import PgProxy
from tests.support.postgres import PostgresServer, find_bindir
from tests.test_store_group_commit import Writer, stored_rows

TASKS = 10
CHUNKS = 25


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresServer]:
    """A cluster of this module's own: its tests stop and restart it."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: run scripts/ensure-postgres.sh")
    pg = PostgresServer(bindir).start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
async def proxied(own_pg: PostgresServer) -> AsyncIterator[tuple[PgProxy, str, str]]:
    """(proxy, store URL through the proxy, store URL of the real server)."""
    url = own_pg.database()
    proxy = await PgProxy(own_pg.port).start()
    try:
        yield proxy, proxy.url(url, own_pg.port), url
    finally:
        await proxy.aclose()


async def stream(writer: Writer, delay: float = 0.02) -> int:
    await writer.chunk("0", append=False)
    for i in range(1, CHUNKS):
        await writer.chunk(str(i % 10))
        await asyncio.sleep(delay)
    return await writer.state(TaskState.TASK_STATE_COMPLETED)


async def stream_through(stores: Stores, outage) -> list[tuple[Writer, int]]:
    """TASKS tasks streaming while `outage()` runs; each task's final version."""
    writers = [Writer(stores, str(uuid.uuid4())) for _ in range(TASKS)]
    await asyncio.gather(*(w.create() for w in writers))
    streams = asyncio.gather(*(stream(w) for w in writers))
    await asyncio.sleep(0.15)
    await outage()
    finals = await asyncio.wait_for(streams, 120)
    return list(zip(writers, finals, strict=True))


async def assert_all_stored(url: str, results: list[tuple[Writer, int]]) -> None:
    """Every version of every task is in the database: nothing was dropped."""
    for writer, final in results:
        assert await stored_rows(url, writer.task.id) == (final, list(range(1, final + 1)))


@pytest.mark.parametrize("mode", ["starting_up", "refuse"])
async def test_writes_wait_out_a_database_that_refuses_them(
    proxied: tuple[PgProxy, str, str], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """57P03 for 2 s (what PostgreSQL answers in crash recovery), or connections
    refused for 2 s; open connections are cut as the outage starts."""
    proxy, url, real_url = proxied
    caplog.set_level(logging.INFO, logger="molecule_runtime")
    stores = await open_stores(url, event_retention=0)
    try:

        async def outage() -> None:
            await proxy.set_mode(mode)  # type: ignore[arg-type]
            await asyncio.sleep(2.0)
            await proxy.set_mode("forward")

        results = await stream_through(stores, outage)
    finally:
        await stores.aclose()
    await assert_all_stored(real_url, results)
    if mode == "starting_up":
        assert proxy.refused_starting_up > 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "task store unavailable" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.INFO)
    back = [r.getMessage() for r in caplog.records if "task store is back" in r.getMessage()]
    assert len(back) == 1, back


async def test_writes_survive_connections_cut_mid_stream(proxied: tuple[PgProxy, str, str]) -> None:
    """A killed postmaster: every connection drops (maybe mid-commit), several times."""
    proxy, url, real_url = proxied
    stores = await open_stores(url, event_retention=0)
    try:

        async def outage() -> None:
            for _ in range(6):
                await proxy.cut()
                await asyncio.sleep(0.07)

        results = await stream_through(stores, outage)
    finally:
        await stores.aclose()
    await assert_all_stored(real_url, results)


async def test_writes_survive_a_postgresql_restart(own_pg: PostgresServer) -> None:
    """Fast shutdown of the real server, back 2 s later on the same port."""
    url = own_pg.database()
    stores = await open_stores(url, event_retention=0)
    try:

        async def outage() -> None:
            await asyncio.to_thread(own_pg.stop, remove=False)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(own_pg.start)

        results = await stream_through(stores, outage)
    finally:
        await stores.aclose()
    await assert_all_stored(url, results)


async def test_a_claim_during_57p03_is_refused_and_taken_when_sent_again(
    proxied: tuple[PgProxy, str, str],
) -> None:
    """The send is refused as retryable (nothing is created); the claim's write is
    not dropped but given back once it lands, so the same message sent again
    after the outage is taken."""
    proxy, url, _ = proxied
    stores = await open_stores(url, event_retention=0)
    try:
        await proxy.set_mode("starting_up")
        claim = MessageClaim("owner", "m-1", "t-1", "c-1", "d", now_utc())
        with pytest.raises(StoreUnavailable) as refused:
            await asyncio.wait_for(stores.message_ids.claim(claim), 30)
        assert refused.value.why == "database starting up"
        # Known to be away now: the next send is refused at once.
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(stores.message_ids.claim(claim), 1)
        await proxy.set_mode("forward")
        again = MessageClaim("owner", "m-1", "t-2", "c-1", "d", now_utc())
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                assert await asyncio.wait_for(stores.message_ids.claim(again), 30) is None
                break
            except StoreUnavailable:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
        held = await stores.message_ids.get("owner", "m-1")
        assert held is not None and held.task_id == "t-2"
    finally:
        await stores.aclose()


async def test_sqlite_writes_wait_out_a_full_disk(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" for 2 s (the database may not grow:
    max_page_count at its current size), then room again."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    stores = await open_stores(url, event_retention=0)
    assert stores.engine is not None
    limit: list[int | None] = [None]

    @event.listens_for(stores.engine.sync_engine, "checkout")
    def _cap(dbapi_conn, _record, _proxy) -> None:
        cursor = dbapi_conn.cursor()
        if limit[0] is None:
            cursor.execute("PRAGMA max_page_count=1073741823")
        else:
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    try:

        async def outage() -> None:
            limit[0] = 1
            await asyncio.sleep(2.0)
            assert not stores.health.available
            assert stores.health.reason == "disk full"
            limit[0] = None

        results = await stream_through(stores, outage)
    finally:
        await stores.aclose()
    await assert_all_stored(url, results)



async def test_readiness_says_the_store_cannot_write_and_why(
    proxied: tuple[PgProxy, str, str], tmp_path: Path
) -> None:
    """A write probe, not SELECT 1: a locked SQLite file still answers reads."""
    proxy, url, _ = proxied
    pg_stores = await open_stores(url, event_retention=0)
    try:
        assert await pg_stores.write_status() == (True, "ok")
        await proxy.set_mode("starting_up")
        ok, why = await pg_stores.write_status()
        assert not ok and why.startswith("cannot write: database starting up"), why
        await proxy.set_mode("forward")
        assert await pg_stores.write_status() == (True, "ok")
    finally:
        await pg_stores.aclose()

    db = tmp_path / "tasks.db"
    sqlite_stores = await open_stores(f"sqlite+aiosqlite:///{db}", event_retention=0)
    try:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            ok, why = await asyncio.wait_for(sqlite_stores.write_status(), 10)
            assert not ok and why == "cannot write: locked", why
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert await sqlite_stores.write_status() == (True, "ok")
    finally:
        await sqlite_stores.aclose()


async def test_a_write_the_database_rejects_for_good_fails_that_task_only(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the database's weather (here: a NUL byte PostgreSQL never stores): that
    task fails with a message saying so; the tasks committed with it are stored."""
    url = postgres.database()
    stores = await open_stores(url, event_retention=0)
    try:
        good = [Writer(stores, str(uuid.uuid4())) for _ in range(5)]
        bad = Writer(stores, "bad\x00id")
        results = await asyncio.wait_for(
            asyncio.gather(*(w.create() for w in [*good, bad]), return_exceptions=True), 60
        )
        assert all(isinstance(v, int) for v in results[:-1]), results
        assert isinstance(results[-1], TaskNotStored), results[-1]
        assert "could not be stored" in str(results[-1])
        for writer in good:
            assert (await stored_rows(url, writer.task.id))[0] == 1
        assert stores.health.available  # a rejected write is no outage
    finally:
        await stores.aclose()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "could not be stored" in errors[0].getMessage()


class _DriverError(Exception):
    def __init__(self, sqlstate: str, text: str) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "text", "transient", "reason"),
    [
        ("57P03", "the database system is starting up", True, "database starting up"),
        ("57P01", "terminating connection due to administrator command", True, "database shutting down"),
        ("08006", "connection failure", True, "unreachable"),
        ("08003", "connection does not exist", True, "unreachable"),
        ("40001", "could not serialize access", True, "locked"),
        ("40P01", "deadlock detected", True, "locked"),
        ("53100", "could not extend file: No space left on device", True, "disk full"),
        ("53300", "sorry, too many clients already", True, "too many connections"),
        ("25006", "cannot execute UPDATE in a read-only transaction", True, "read-only"),
        ("58030", "could not write to file", True, "I/O error"),
        ("23505", "duplicate key value violates unique constraint", False, None),
        ("22021", "invalid byte sequence for encoding", False, None),
        ("42P01", "relation does not exist", False, None),
    ],
)
def test_which_database_errors_pass(sqlstate: str, text: str, transient: bool, reason: str | None) -> None:
    """The classification the retries rest on, as the asyncpg dialect wraps errors:
    a plain DBAPIError (or a subclass) whose driver error carries the SQLSTATE."""
    from sqlalchemy.exc import DBAPIError

    from molecule_runtime.store.failures import is_transient, reason_of

    error = DBAPIError.instance("SELECT 1", {}, _DriverError(sqlstate, text), Exception)
    assert is_transient(error) is transient
    if reason is not None:
        assert reason_of(error) == reason
    assert is_transient(ConnectionRefusedError(111, "Connect call failed"))
    assert reason_of(ConnectionRefusedError(111, "Connect call failed")) == "unreachable"
