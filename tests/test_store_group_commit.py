"""The write-behind, group-commit task store on a real SQLite file and a real
PostgreSQL server: what is stored when, versions, compaction, conflicts, a locked
database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from a2a.server.cluster import ConcurrentTaskModificationError, TaskVersion
from a2a.server.context import ServerCallContext
from a2a.server.tasks.task_manager import append_artifact_to_task
from a2a.types.a2a_pb2 import (
    Artifact,
    Part,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from molecule_runtime.sdk_seam import version_number
from molecule_runtime.store import Stores, open_stores
from molecule_runtime.store.task_writes import MAX_UNSTORED

CTX = ServerCallContext()


def status(state: TaskState) -> TaskStatus:
    s = TaskStatus(state=state)
    s.timestamp.FromDatetime(datetime.now(UTC))
    return s


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    return request.getfixturevalue("postgres").database()


async def stored_rows(url: str, task_id: str) -> tuple[int | None, list[int]]:
    """(stored version, logged event versions) read through a connection of its own."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            version = (
                await conn.execute(
                    text("SELECT version FROM task_versions WHERE task_id = :t"), {"t": task_id}
                )
            ).scalar_one_or_none()
            events = (
                await conn.execute(
                    text("SELECT task_version FROM task_events WHERE task_id = :t ORDER BY seq"),
                    {"t": task_id},
                )
            ).scalars()
            return version, list(events)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def counting(stores: Stores, statements: list[str]) -> Iterator[None]:
    """Every SQL statement the store runs meanwhile, appended to `statements`."""
    assert stores.engine is not None
    engine = stores.engine.sync_engine

    def count(_conn, _cursor, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", count)


@contextlib.asynccontextmanager
async def write_lock(url: str) -> AsyncIterator[None]:
    """Another connection holds the tables' write lock, like a long migration would."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("COMMIT")
            conn.close()
        return
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("LOCK TABLE task_versions IN EXCLUSIVE MODE"))
            yield
    finally:
        await engine.dispose()


class Writer:
    """Applies events to a task the way the SDK's TaskManager does, through the store."""

    def __init__(self, stores: Stores, task_id: str) -> None:
        self.stores = stores
        self.task = Task(id=task_id, context_id="ctx", status=status(TaskState.TASK_STATE_SUBMITTED))
        self.version = TaskVersion.MISSING

    async def create(self) -> int:
        self.version = await self.stores.tasks.save(
            self.task, event=self.task, prev_version=self.version, context=CTX
        )
        return version_number(self.version)

    async def state(self, state: TaskState) -> int:
        event = TaskStatusUpdateEvent(task_id=self.task.id, context_id="ctx", status=status(state))
        self.task.status.CopyFrom(event.status)
        self.version = await self.stores.tasks.save(
            self.task, event=event, prev_version=self.version, context=CTX
        )
        return version_number(self.version)

    async def chunk(self, text: str, *, append: bool = True) -> int:
        event = TaskArtifactUpdateEvent(
            task_id=self.task.id,
            context_id="ctx",
            artifact=Artifact(artifact_id="a", parts=[Part(text=text)]),
            append=append,
        )
        append_artifact_to_task(self.task, event)
        self.version = await self.stores.tasks.save(
            self.task, event=event, prev_version=self.version, context=CTX
        )
        return version_number(self.version)


@pytest.fixture
async def opened(store_url: str):
    stores = await open_stores(store_url, event_retention=0)
    try:
        yield stores, store_url
    finally:
        await stores.aclose()


async def test_state_changes_are_stored_before_save_returns(opened) -> None:
    stores, url = opened
    writer = Writer(stores, str(uuid.uuid4()))
    assert await writer.create() == 1
    assert await stored_rows(url, writer.task.id) == (1, [1])
    assert await writer.state(TaskState.TASK_STATE_WORKING) == 2
    assert await stored_rows(url, writer.task.id) == (2, [1, 2])


async def test_chunks_are_written_behind_in_order_and_compacted(opened) -> None:
    stores, url = opened
    writer = Writer(stores, str(uuid.uuid4()))
    await writer.create()
    await writer.state(TaskState.TASK_STATE_WORKING)
    versions = [await writer.chunk("c0 ", append=False)]
    versions += [await writer.chunk(f"c{i} ") for i in range(1, 40)]
    assert versions == list(range(3, 43))
    # Handed out at once; nothing of it had to wait for the database.
    stored, _ = await stored_rows(url, writer.task.id)
    assert stored is not None and stored < 42
    # This process reads its own writes, compacted into one part.
    current = await stores.tasks.get(writer.task.id, CTX)
    assert current is not None and version_number(current.version) == 42
    assert [p.text for p in current.task.artifacts[0].parts] == ["".join(f"c{i} " for i in range(40))]
    await stores.tasks.wait_stored(writer.task.id)
    assert await stored_rows(url, writer.task.id) == (42, list(range(1, 43)))


async def test_terminal_state_lands_with_every_chunk_before_it(opened) -> None:
    stores, url = opened
    writer = Writer(stores, str(uuid.uuid4()))
    await writer.create()
    await writer.chunk("a", append=False)
    for _ in range(30):
        await writer.chunk("b")
    final = await writer.state(TaskState.TASK_STATE_COMPLETED)
    # No wait_stored: the terminal save itself returned only once all was committed.
    assert await stored_rows(url, writer.task.id) == (final, list(range(1, final + 1)))
    fresh = await open_stores(url, event_retention=0)
    try:
        stored = await fresh.tasks.get(writer.task.id, CTX)
    finally:
        await fresh.aclose()
    assert stored is not None
    assert stored.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [p.text for p in stored.task.artifacts[0].parts] == ["a" + "b" * 30]


async def test_the_event_log_serves_unstored_events_to_followers_here(opened) -> None:
    stores, _ = opened
    writer = Writer(stores, str(uuid.uuid4()))
    await writer.create()
    await writer.chunk("x", append=False)
    await writer.chunk("y")
    assert stores.event_log is not None
    logged = await stores.event_log.read_after(writer.task.id, 0)
    assert [v for v, _ in logged] == [1, 2, 3]
    await stores.tasks.wait_stored(writer.task.id)
    assert [v for v, _ in await stores.event_log.read_after(writer.task.id, 1)] == [2, 3]


async def test_a_new_writer_after_a_crash_skips_the_unstored_versions(store_url: str) -> None:
    url = store_url
    crashed = await open_stores(url, event_retention=0)
    writer = Writer(crashed, str(uuid.uuid4()))
    await writer.create()
    await writer.state(TaskState.TASK_STATE_WORKING)
    streamed = [await writer.chunk("lost", append=False)] + [await writer.chunk("!") for _ in range(5)]
    # The process dies before the committer ran: those chunks never reach the database.
    committer = crashed._group_commit._committer  # type: ignore[union-attr]
    assert committer is not None
    committer.cancel()
    await asyncio.gather(committer, return_exceptions=True)
    assert await stored_rows(url, writer.task.id) == (2, [1, 2])
    await crashed.engine.dispose()  # type: ignore[union-attr]

    restarted = await open_stores(url, event_retention=0)
    try:
        stored = await restarted.tasks.get(writer.task.id, CTX)
        assert stored is not None and version_number(stored.version) == 2
        resumed = Writer(restarted, writer.task.id)
        resumed.task, resumed.version = stored.task, stored.version
        first = await resumed.chunk("new", append=False)
        assert first == 2 + MAX_UNSTORED + 1
        assert first > max(streamed)
        final = await resumed.state(TaskState.TASK_STATE_COMPLETED)
        assert await stored_rows(url, writer.task.id) == (final, [1, 2, first, final])
    finally:
        await restarted.aclose()


async def test_a_cancel_from_another_process_wins_over_unstored_chunks(store_url: str) -> None:
    url = store_url
    running = await open_stores(url, event_retention=0)
    other = await open_stores(url, event_retention=0)
    try:
        writer = Writer(running, str(uuid.uuid4()))
        await writer.create()
        await writer.state(TaskState.TASK_STATE_WORKING)
        await writer.chunk("a", append=False)
        # Another replica cancels (the SDK's CancelTask: no version check).
        stored = await other.tasks.get(writer.task.id, CTX)
        assert stored is not None
        canceled = Task()
        canceled.CopyFrom(stored.task)
        canceled.status.CopyFrom(status(TaskState.TASK_STATE_CANCELED))
        event = TaskStatusUpdateEvent(task_id=canceled.id, context_id="ctx", status=canceled.status)
        cancel_version = await other.tasks.save(
            canceled, event=event, prev_version=stored.version, context=CTX
        )
        assert version_number(cancel_version) > 3
        await writer.chunk("b")
        with pytest.raises(ConcurrentTaskModificationError):
            await running.tasks.wait_stored(writer.task.id)
        with pytest.raises(ConcurrentTaskModificationError):
            await writer.chunk("c")
        final = await running.tasks.get(writer.task.id, CTX)
        assert final is not None and final.task.status.state == TaskState.TASK_STATE_CANCELED
    finally:
        await running.aclose()
        await other.aclose()


async def test_many_tasks_share_transactions_and_wait_out_a_locked_database(
    opened,
) -> None:
    stores, url = opened
    writers = [Writer(stores, str(uuid.uuid4())) for _ in range(50)]
    await asyncio.gather(*(w.create() for w in writers))

    async def stream(w: Writer) -> int:
        await w.chunk("0", append=False)
        for i in range(1, 20):
            await w.chunk(str(i % 10))
            await asyncio.sleep(0.01)
        return await w.state(TaskState.TASK_STATE_COMPLETED)

    # Writes wait while another connection holds the lock; none fails.
    async with write_lock(url):
        streams = asyncio.gather(*(stream(w) for w in writers))
        await asyncio.sleep(1.5)
        assert not streams.done()  # the terminal states cannot be stored yet
    finals = await asyncio.wait_for(streams, 60)
    for w, final in zip(writers, finals, strict=True):
        assert await stored_rows(url, w.task.id) == (final, list(range(1, final + 1)))


async def test_one_commit_of_many_tasks_is_a_few_statements(opened) -> None:
    """Each statement is a round trip through the event loop: a commit's cost must not
    grow with the number of tasks in it."""
    stores, url = opened
    writers = [Writer(stores, str(uuid.uuid4())) for _ in range(40)]
    await asyncio.gather(*(w.create() for w in writers))
    statements: list[str] = []
    with counting(stores, statements):
        for w in writers:
            await w.chunk("x", append=False)
            await w.chunk("y")
        await asyncio.gather(*(stores.tasks.wait_stored(w.task.id) for w in writers))
    writes = [s for s in statements if s.split()[0].upper() in ("INSERT", "UPDATE")]
    # One commit may split in two (a flush started while the chunks arrived);
    # per commit: versions, task rows, events.
    assert 0 < len(writes) <= 2 * 3, statements
    for w in writers:
        assert await stored_rows(url, w.task.id) == (3, [1, 2, 3])


async def test_a_conflict_in_a_commit_fails_only_that_task(store_url: str) -> None:
    url = store_url
    running = await open_stores(url, event_retention=0)
    other = await open_stores(url, event_retention=0)
    try:
        writers = [Writer(running, str(uuid.uuid4())) for _ in range(10)]
        await asyncio.gather(*(w.create() for w in writers))
        # Another replica moves one task on (a stage that ran there).
        taken = writers[3]
        stored = await other.tasks.get(taken.task.id, CTX)
        assert stored is not None
        elsewhere = Writer(other, taken.task.id)
        elsewhere.task, elsewhere.version = stored.task, stored.version
        moved_to = await elsewhere.state(TaskState.TASK_STATE_WORKING)
        # This process, unaware, streams into all ten: one commit, one conflict.
        for w in writers:
            await w.chunk("z", append=False)
        waits = await asyncio.gather(
            *(running.tasks.wait_stored(w.task.id) for w in writers), return_exceptions=True
        )
        for w, waited in zip(writers, waits, strict=True):
            if w is taken:
                # Its writer hears of it while waiting, or else at its next write.
                if not isinstance(waited, ConcurrentTaskModificationError):
                    with pytest.raises(ConcurrentTaskModificationError):
                        await w.chunk("again")
            else:
                assert waited is None
                assert await stored_rows(url, w.task.id) == (2, [1, 2])
        assert await stored_rows(url, taken.task.id) == (moved_to, [1, moved_to])
    finally:
        await running.aclose()
        await other.aclose()


async def test_a_new_task_id_made_up_here_is_read_without_the_database(opened, monkeypatch) -> None:
    stores, _ = opened
    statements: list[str] = []
    writer = Writer(stores, str(uuid.uuid4()))
    stores.tasks.expect_new(writer.task.id)
    with counting(stores, statements):
        assert await stores.tasks.get(writer.task.id, CTX) is None
        assert statements == []
        await writer.create()
        stored = await stores.tasks.get(writer.task.id, CTX)
        assert stored is not None and stored.task.id == writer.task.id
        # Past its time an id is looked up again (a request that never created it).
        stale = str(uuid.uuid4())
        stores.tasks.expect_new(stale)
        monkeypatch.setattr("molecule_runtime.store.group_commit.NEW_ID_TTL", 0.0)
        statements.clear()
        assert await stores.tasks.get(stale, CTX) is None
        assert statements, "an expired new id must be read from the database"


async def test_a_writer_that_reread_after_a_conflict_writes_again(store_url: str) -> None:
    """The stream's process writes a task another replica wrote since (a stage that
    hopped there): its stale write fails, and its write after re-reading the task
    (as the SDK's consumer does on a conflict) lands instead of failing again."""
    here = await open_stores(store_url, event_retention=0)
    there = await open_stores(store_url, event_retention=0)
    try:
        live = Writer(here, str(uuid.uuid4()))
        await live.create()
        stored = await there.tasks.get(live.task.id, CTX)
        assert stored is not None
        headless = Writer(there, live.task.id)
        headless.task, headless.version = stored.task, stored.version
        await headless.state(TaskState.TASK_STATE_WORKING)
        await headless.chunk("answer", append=False)
        await there.tasks.wait_stored(live.task.id)

        with pytest.raises(ConcurrentTaskModificationError):
            await live.state(TaskState.TASK_STATE_WORKING)
        reread = await here.tasks.get(live.task.id, CTX)
        assert reread is not None
        live.task, live.version = reread.task, reread.version
        final = await live.state(TaskState.TASK_STATE_COMPLETED)
        assert final > version_number(reread.version)
        landed = await there.tasks.get(live.task.id, CTX)
        assert landed is not None and landed.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert "".join(p.text for a in landed.task.artifacts for p in a.parts) == "answer"
    finally:
        await here.aclose()
        await there.aclose()
