"""SIGTERM in durable mode: in-flight tasks get the grace period, the worker stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from a2a.types.a2a_pb2 import TaskState

from tests.support.a2a import make_client, stream_events
from tests.support.durable import durable_env, scripted_message, streamed_text

pytestmark = pytest.mark.temporal


async def test_sigterm_lets_in_flight_task_finish(temporal_server, server_factory, tmp_path) -> None:
    env = durable_env(temporal_server.address, tmp_path / "records", MOLECULE_SHUTDOWN_GRACE="10")
    server = server_factory(env)
    client = await make_client(server.url)
    seen: list = []

    async def consume() -> None:
        async for event in stream_events(client, scripted_message(chunks=10, delay=0.1)):
            seen.append(event)

    consumer = asyncio.create_task(consume())
    deadline = time.monotonic() + 20
    while not any(e.WhichOneof("payload") == "artifact_update" for e in seen):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGTERM)
    await asyncio.wait_for(consumer, 20)
    assert streamed_text(seen) == "".join(f"c{i} " for i in range(10))
    assert seen[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert await asyncio.to_thread(server.proc.wait, 20) == 0
    await client.close()
