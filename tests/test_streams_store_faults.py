"""Streams through store faults over real HTTP/SSE: a SIGKILL while chunks are not
stored yet, and a database held locked for longer than the old store wait. Mostly
waiting, so they run beside other tests (the load tests stay in
test_streaming_scale.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env, scripted_env
from tests.support.scripted_answers import expected, parts_text, starts, wait_done
from tests.support.sse import (
    Frame,
    assert_increasing,
    assert_stored_prefix_then,
    read_frames,
    resume_to_the_end,
    state_of,
    stream_request,
    subscribe_request,
    task_id_of,
    text_of,
)


@pytest.mark.temporal
async def test_sigkill_with_unstored_chunks_then_restart_delivers_the_exact_answer(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    """Chunks come faster than the store's flush interval, so some of what the client
    saw was never stored when the process dies: the log keeps a gap-free prefix, the
    retry's events come after every offset the client saw, and resuming from the last
    one it saw gives exactly the answer."""
    env = durable_env(temporal_server.address, tmp_path / "records", STREAM_BATCH_WINDOW="0")
    workdir = tmp_path / "crash"
    server = server_factory(env, workdir=workdir)
    chunks = 200
    request = stream_request("JSONRPC", server.url, "go", {"chunks": chunks, "delay": 0.01})
    async with httpx.AsyncClient(timeout=30) as http:
        before = await read_frames(http, request, stop_after_chunks=60)
        server.kill()
        task_id = task_id_of(before)
        restarted = server_factory(env, workdir=workdir, port=server.port)
        after = await resume_to_the_end(http, "JSONRPC", restarted.url, task_id, before, timeout=60)
        assert text_of(before + after) == expected(chunks)
        replay = await read_frames(
            http, subscribe_request("JSONRPC", restarted.url, task_id), last_event_id=0
        )
        assert_increasing(replay)
        # What the crashed process stored is a prefix of what it streamed; then the retry.
        assert_stored_prefix_then(replay, before, after)
        assert text_of(replay) == expected(chunks)
        task = await wait_done(http, restarted.url, task_id, 30)
        assert parts_text(task) == [expected(chunks)]


class WriteLock:
    """Holds SQLite's write lock from another connection, like a long migration would."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.taken = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.taken.set()
            self.release.wait(120)
            conn.execute("COMMIT")
        finally:
            conn.close()


async def _eight_streams(http: httpx.AsyncClient, base: str, chunks: int) -> list[asyncio.Task[list[Frame]]]:
    # Eight messages (each its own messageId: one sent eight times would be one task).
    return [
        asyncio.create_task(
            read_frames(
                http,
                stream_request("JSONRPC", base, "go", {"chunks": chunks, "delay": 0.05}),
                timeout=150,
            )
        )
        for _ in range(8)
    ]


@pytest.mark.slow
@pytest.mark.temporal
async def test_a_store_locked_longer_than_30_s_slows_tasks_down_without_failing_them(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    """Both modes at once, each server on its own database, both locked for 35 s."""
    servers = {
        "direct": (server_factory(scripted_env(tmp_path / "direct")), tmp_path / "direct"),
        "durable": (
            server_factory(durable_env(temporal_server.address, tmp_path / "durable")),
            tmp_path / "durable",
        ),
    }
    chunks = 80  # 4 s each
    locks = [WriteLock(server.workdir / "data" / "tasks.db") for server, _ in servers.values()]
    async with httpx.AsyncClient(timeout=120) as http:
        streams = {mode: await _eight_streams(http, server.url, chunks) for mode, (server, _) in servers.items()}
        await asyncio.sleep(1.0)
        holders = [threading.Thread(target=lock.hold, daemon=True) for lock in locks]
        for holder in holders:
            holder.start()
        for lock in locks:
            assert await asyncio.to_thread(lock.taken.wait, 30)
        await asyncio.sleep(35)
        for lock in locks:
            lock.release.set()
        for holder in holders:
            await asyncio.to_thread(holder.join, 30)
        for mode, (server, records) in servers.items():
            results: list[list[Frame]] = await asyncio.gather(*streams[mode])
            for frames in results:
                assert state_of(frames[-1][1]) == "TASK_STATE_COMPLETED", (mode, frames[-1])
                assert text_of(frames) == expected(chunks), mode
                task_id = task_id_of(frames)
                task = await wait_done(http, server.url, task_id, 30)
                assert parts_text(task) == [expected(chunks)], mode
                assert starts(records, task_id) == 1, (mode, read_records(records, task_id))
            assert "Retrying" not in server.log(), mode


