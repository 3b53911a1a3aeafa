"""WorkflowPeers: whether another process polls the shared workflow queue (real Temporal)."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import Client
from temporalio.worker import Worker

from molecule_runtime.durable import peers
from molecule_runtime.durable.peers import WorkflowPeers
from molecule_runtime.durable.workflow import AgentTaskWorkflow


async def _polled_by(client: Client, queue: str, identity: str) -> Worker:
    worker = Worker(client, task_queue=queue, workflows=[AgentTaskWorkflow], identity=identity)
    asyncio.get_running_loop().create_task(worker.run())
    return worker


async def _until(check, expected: bool, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await check() is not expected:
        assert asyncio.get_running_loop().time() < deadline, f"never {expected}"
        await asyncio.sleep(0.2)


async def test_alone_on_the_queue_then_joined(temporal_server, monkeypatch) -> None:
    monkeypatch.setattr(peers, "REFRESH_S", 0.0)
    client = await Client.connect(temporal_server.address)
    queue = f"peers-{uuid.uuid4().hex[:8]}"
    me = "molecule-runtime@me"
    view = WorkflowPeers(lambda: client, "default", queue, me)
    mine = await _polled_by(client, queue, me)
    try:
        await _until(view.others_poll, False)
        # Another process: its own connection (one per process, as in production).
        other_client = await Client.connect(temporal_server.address)
        other = await _polled_by(other_client, queue, "molecule-runtime@other")
        try:
            await _until(view.others_poll, True)
        finally:
            await other.shutdown()
    finally:
        await mine.shutdown()


async def test_unknown_means_others(temporal_server) -> None:
    # No client (Temporal not connected): the safe answer is that others may ask.
    assert await WorkflowPeers(lambda: None, "default", "q", "me").others_poll() is True
    client = await Client.connect(temporal_server.address)
    view = WorkflowPeers(lambda: client, "no-such-namespace", "q", "me")
    assert await view.others_poll() is True
