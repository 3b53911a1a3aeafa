"""TASK_STORE_URL=postgresql+asyncpg://…: a real PostgreSQL server, real runtime processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from a2a.types.a2a_pb2 import GetTaskRequest
from sqlalchemy import text

from molecule_runtime.store import Stores, open_stores
from tests.support.a2a import assert_tasks_kept, make_client, send_texts, task_text
from tests.support.postgres import PASSWORD, PostgresServer, find_bindir


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh, empty database per test."""
    return postgres.database()


async def public_tables(stores: Stores) -> set[str]:
    """The tables the store created in the database's public schema."""
    assert stores.engine is not None
    async with stores.engine.connect() as conn:
        query = text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return set((await conn.execute(query)).scalars())


def test_asyncpg_driver_is_installed() -> None:
    # a2a-sdk[postgresql] brings asyncpg; SQLAlchemy must resolve the dialect
    # without a server (engines connect lazily).
    import asyncpg  # noqa: F401
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("postgresql+asyncpg://user:pw@127.0.0.1:1/db")
    assert engine.dialect.driver == "asyncpg"


async def test_schema_is_created_on_first_start_and_reused(pg_url: str) -> None:
    first = await open_stores(pg_url)
    try:
        assert first.event_log is not None
        assert PASSWORD not in first.description
        await first.check()
        tables = await public_tables(first)
        assert tables, "no tables were created"
    finally:
        await first.aclose()
    # A second process starting against the same database (a replica, a
    # restart) must accept the existing schema, not fail or recreate it.
    second = await open_stores(pg_url)
    try:
        await second.check()
        assert await public_tables(second) == tables
    finally:
        await second.aclose()


async def test_processes_starting_together_on_an_empty_database(postgres: PostgresServer) -> None:
    """`docker compose up` starts every replica and worker at once against a new database."""

    async def start() -> None:
        stores = await open_stores(url)
        await stores.aclose()

    for _ in range(3):
        url = postgres.database()
        results = await asyncio.gather(*(start() for _ in range(3)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[0]


async def test_tasks_survive_restart_and_are_shared(
    server_factory, pg_url: str, tmp_path: Path
) -> None:
    env = {"TASK_STORE_URL": pg_url}
    first = server_factory(env, workdir=tmp_path / "a")
    texts = ["kept in postgres", "second task"]
    ids = await send_texts(first.url, texts)
    # A second replica with its own (empty) data dir sees the same tasks at once.
    other = server_factory(env, workdir=tmp_path / "b")
    client = await make_client(other.url)
    try:
        task = await client.get_task(GetTaskRequest(id=ids[0]))
        assert task_text(task) == texts[0]
    finally:
        await client.close()
    first.stop()
    other.stop()
    assert first.proc is not None and first.proc.returncode == 0, first.log()
    # Nothing went to a local SQLite file: the tasks live only in PostgreSQL.
    assert not (tmp_path / "a" / "data" / "tasks.db").exists()

    restarted = server_factory(env, workdir=tmp_path / "c")
    async with httpx.AsyncClient(timeout=10) as http:
        ready = await http.get(restarted.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["store"] == "ok"
    await assert_tasks_kept(restarted.url, ids, texts)
    for server in (first, other, restarted):
        assert PASSWORD not in server.log(), "the database password leaked into the log"


async def test_database_restart_under_a_running_server(server_factory, tmp_path: Path) -> None:
    """/readyz turns 503 while PostgreSQL is down and recovers without restarting the runtime."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: run scripts/ensure-postgres.sh")
    # A cluster of its own: this test stops it, the shared one must stay up.
    pg = PostgresServer(bindir).start()
    try:
        url = pg.database()
        server = server_factory({"TASK_STORE_URL": url}, workdir=tmp_path / "srv")
        [before] = await send_texts(server.url, ["before the outage"])

        pg.stop(remove=False)
        async with httpx.AsyncClient(timeout=10) as http:
            down = await http.get(server.url + "/readyz")
            assert down.status_code == 503, down.text
            assert down.json()["store"].startswith("cannot write: unreachable")
            assert PASSWORD not in down.text

            pg.start()
            deadline = time.monotonic() + 20
            while (await http.get(server.url + "/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "runtime did not reconnect to PostgreSQL"
                await asyncio.sleep(0.2)
        [after] = await send_texts(server.url, ["after the outage"])
        client = await make_client(server.url)
        try:
            for task_id, value in ((before, "before the outage"), (after, "after the outage")):
                assert task_text(await client.get_task(GetTaskRequest(id=task_id))) == value
        finally:
            await client.close()
    finally:
        pg.stop()
