"""Streaming at scale over real HTTP/SSE: many concurrent streams in durable mode and a
long answer stored as one part (store faults under streams: test_streams_store_faults.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env, scripted_env
from tests.support.scripted_answers import expected, parts_text, starts
from tests.support.sse import (
    assert_increasing,
    get_task_json,
    read_frames,
    state_of,
    stream_request,
    task_id_of,
    text_of,
)

# Load tests run alone (scripts/test.sh): 100 streams would skew other tests' timings.
pytestmark = pytest.mark.serial


@pytest.mark.temporal
@pytest.mark.slow
async def test_100_concurrent_durable_streams_all_complete_running_once(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    server = server_factory(durable_env(temporal_server.address, records))
    chunks = 100  # 5 s each
    limits = httpx.Limits(max_connections=120, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        # One request each: a message sent again (same messageId) would be a repeat
        # following the first one's task, not a task of its own.
        requests = [
            stream_request("JSONRPC", server.url, "go", {"chunks": chunks, "delay": 0.05})
            for _ in range(100)
        ]
        results = await asyncio.gather(*(read_frames(http, r, timeout=150) for r in requests))
        assert len({task_id_of(frames) for frames in results}) == 100
        for frames in results:
            assert state_of(frames[-1][1]) == "TASK_STATE_COMPLETED", frames[-1]
            assert text_of(frames) == expected(chunks)
            assert_increasing(frames)
            task_id = task_id_of(frames)
            task = await get_task_json(http, server.url, task_id)
            assert parts_text(task) == [expected(chunks)]
            assert starts(records, task_id) == 1, read_records(records, task_id)
    assert "Retrying" not in server.log()


async def test_a_4000_chunk_answer_is_stored_as_one_part(server_factory, tmp_path: Path) -> None:
    records = tmp_path / "records"
    server = server_factory(scripted_env(records, STREAM_BATCH_WINDOW="0"))
    chunks = 4000
    async with httpx.AsyncClient(timeout=60) as http:
        frames = await read_frames(
            http, stream_request("JSONRPC", server.url, "go", {"chunks": chunks}), timeout=120
        )
        assert text_of(frames) == expected(chunks)
        task = await get_task_json(http, server.url, task_id_of(frames))
    assert parts_text(task) == [expected(chunks)]
    with sqlite3.connect(server.workdir / "data" / "tasks.db") as conn:
        (artifacts,) = conn.execute(
            "SELECT artifacts FROM tasks WHERE id = ?", (task["id"],)
        ).fetchone()
    assert len(json.loads(artifacts)[0]["parts"]) == 1
