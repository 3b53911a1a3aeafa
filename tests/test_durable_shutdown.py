"""SIGTERM in durable mode: in-flight tasks get the grace period, the worker stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from a2a.types.a2a_pb2 import TaskState

from tests.support.a2a import BackgroundStream, make_client
from tests.support.durable import durable_env, scripted_message, streamed_text

pytestmark = pytest.mark.temporal


async def test_sigterm_lets_in_flight_task_finish(temporal_server, server_factory, tmp_path) -> None:
    env = durable_env(temporal_server.address, tmp_path / "records", MOLECULE_SHUTDOWN_GRACE="10")
    server = server_factory(env)
    client = await make_client(server.url)
    stream = BackgroundStream(client, scripted_message(chunks=10, delay=0.1))
    await stream.wait_chunks(1, timeout=20)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGTERM)
    seen = await stream.finish(20)
    assert streamed_text(seen) == "".join(f"c{i} " for i in range(10))
    assert seen[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert await asyncio.to_thread(server.proc.wait, 20) == 0
    await client.close()
