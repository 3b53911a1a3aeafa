"""What the console's timeline shows of a task's durable steps: the journal's story of
each step (which attempt recorded it, which later attempts replayed it) on real
SQLite, PostgreSQL and in memory, a table from before that story was kept, and the
console's steps route with its principal check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from molecule_runtime.adapters import step
from molecule_runtime.config import Settings
from molecule_runtime.execution.steps import AttemptSteps, journaling
from molecule_runtime.server.app import build_app
from molecule_runtime.services import Services
from molecule_runtime.store.steps import StepStore
from molecule_runtime.store.steps_table import RecordedStep
from tests.support.sse import message_json

KEY_A = "alice:alice-key-0123456789"
KEY_B = "bob:bob-key-0123456789abc"


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StepStore]:
    if request.param == "memory":
        yield StepStore()
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    else:
        url = request.getfixturevalue("postgres").database()
    engine = create_async_engine(url)
    steps = StepStore(engine)
    await steps.initialize()
    try:
        yield steps
    finally:
        await engine.dispose()


async def run_attempt(store: StepStore, number: int, names: list[str], turn: str = "t-answer") -> None:
    steps = await AttemptSteps.load(store, "t", turn, number)
    with journaling(steps):
        for name in names:
            await step(name, lambda n=name: {"did": n})


async def until(check, timeout: float = 10.0) -> None:
    """The replays are written off the adapter's path: wait for them to land."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the replays were never written"
        await asyncio.sleep(0.02)


async def test_the_journal_says_who_recorded_and_who_replayed(store: StepStore) -> None:
    await run_attempt(store, 1, ["search", "order"])
    await run_attempt(store, 2, ["search", "order", "mail"])
    await run_attempt(store, 3, ["search"])  # failed again after its first step

    async def replays_written() -> bool:
        entries = await store.journal("t")
        return len(entries) == 3 and entries[0].replayed_by == (2, 3)

    await until(replays_written)
    entries = await store.journal("t")
    assert [(e.seq, e.name, e.attempt, e.replayed_by) for e in entries] == [
        (0, "search", 1, (2, 3)),
        (1, "order", 1, (2,)),
        (2, "mail", 2, ()),
    ]
    assert all(e.turn == "t-answer" for e in entries)
    assert entries[0].recorded_at <= entries[1].recorded_at <= entries[2].recorded_at
    assert entries[0].recorded_at.tzinfo is not None
    # Another task's journal is its own; a forgotten task has none.
    assert await store.journal("other") == []
    await store.delete(["t"])
    assert await store.journal("t") == []


async def test_a_table_from_before_gets_the_columns_and_its_rows_say_not_known(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE molecule_task_steps (task_id VARCHAR(255) NOT NULL, "
                    "turn VARCHAR(300) NOT NULL, seq INTEGER NOT NULL, name VARCHAR(255) NOT NULL, "
                    "result TEXT NOT NULL, recorded_at DATETIME NOT NULL, PRIMARY KEY (task_id, turn, seq))"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO molecule_task_steps VALUES "
                    "('t', 't-answer', 0, 'old', '1', '2024-01-01 00:00:00')"
                )
            )
        store = StepStore(engine)
        await store.initialize()
        await store.initialize()  # twice: the columns are there already
        await run_attempt(store, 2, ["old", "new"])
        await until(lambda: _first_replayed(store))
        entries = await store.journal("t")
        # The old row: its recorder and its replays were not kept (None, not "none").
        assert [(e.name, e.attempt, e.replayed_by) for e in entries] == [("old", None, None), ("new", 2, ())]
    finally:
        await engine.dispose()


async def _first_replayed(store: StepStore) -> bool:
    async with store._engine.connect() as conn:  # type: ignore[union-attr]
        value = (await conn.execute(text("SELECT replayed_by FROM molecule_task_steps WHERE seq = 0"))).scalar()
    return value == "2"


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_the_steps_route_serves_the_caller_its_own_tasks_only(store_kind: str, tmp_path: Path) -> None:
    url = "memory" if store_kind == "memory" else f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    settings = Settings(task_store_url=url, data_dir=tmp_path, api_keys=SecretStr(f"{KEY_A},{KEY_B}"))
    services = await Services.open(settings, accept_tasks=True)
    alice = {"Authorization": "Bearer alice-key-0123456789"}
    bob = {"Authorization": "Bearer bob-key-0123456789abc"}
    try:
        transport = httpx.ASGITransport(app=build_app(services))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            sent = await http.post(
                "/",
                headers={**alice, "A2A-Version": "1.0"},
                json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message_json("hi")}},
            )
            task_id = sent.json()["result"]["task"]["id"]
            journal = services.stores.tasks.steps
            await journal.record(task_id, f"{task_id}-answer", RecordedStep(0, "search", "1", 1))
            await journal.replayed(task_id, f"{task_id}-answer", [0], 2)
            await journal.record(task_id, f"{task_id}-answer-2", RecordedStep(0, "mail", "2", 1))
            path = f"/console/tasks/{task_id}/steps"

            mine = await http.get(path, headers=alice)
            assert mine.status_code == 200, mine.text
            assert mine.headers["cache-control"] == "no-store"
            steps = mine.json()["steps"]
            assert [(s["turn"], s["seq"], s["name"], s["attempt"], s["replayedBy"]) for s in steps] == [
                (1, 0, "search", 1, [2]),
                (2, 0, "mail", 1, []),
            ]
            assert all(s["recordedAt"].endswith("Z") for s in steps)
            # Another principal: the task does not exist for it, as with GetTask.
            theirs = await http.get(path, headers=bob)
            assert theirs.status_code == 404
            assert theirs.json() == (await http.get("/console/tasks/no-such-task/steps", headers=bob)).json()
            assert (await http.get(path)).status_code == 401
            assert (await http.get(f"/console/tasks/{'x' * 5000}/steps", headers=alice)).status_code == 404
    finally:
        await services.close()
