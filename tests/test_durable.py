"""Durable mode against a real Temporal dev server, through real HTTP/SSE."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from a2a.client.client import Client as A2AClient
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
)
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Replayer

from molecule_runtime.durable.workflow import AgentTaskWorkflow
from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import (
    BackgroundStream,
    make_client,
    stream_events,
    task_text,
    wait_terminal,
)
from tests.support.durable import (
    durable_env,
    readyz,
    scripted_message,
    streamed_text,
)
from tests.support.procs import ServerProcess, free_port
from tests.support.temporal import TemporalDevServer

pytestmark = pytest.mark.temporal


def wf_id(env: dict[str, str], task_id: str) -> str:
    return f"molecule:{env['WORKSPACE_ID']}:{task_id}"


HISTORY_FIXTURES = Path(__file__).parent / "fixtures" / "histories"


async def history_of(address: str, workflow_id: str, fixture: str | None = None):
    """Fetch a workflow's history and check it replays against today's workflow code.

    With MOLECULE_RECORD_HISTORIES=1 it is also saved as a replay fixture.
    """
    client = await Client.connect(address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(workflows=[AgentTaskWorkflow]).replay_workflow(history)
    if fixture and os.environ.get("MOLECULE_RECORD_HISTORIES") == "1":
        HISTORY_FIXTURES.mkdir(parents=True, exist_ok=True)
        (HISTORY_FIXTURES / f"{fixture}.json").write_text(history.to_json())
    return history


def activity_names(history) -> list[str]:
    """Regular activities from their scheduled events; local ones from their markers."""
    names = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            details = event.marker_recorded_event_attributes.details
            if "data" in details:
                data = json.loads(details["data"].payloads[0].data)
                names.append(data.get("activity_type") or data.get("activityType"))
    return names


def llm_call_attempts(history) -> list[int]:
    attempts = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attempts.append(event.activity_task_started_event_attributes.attempt)
    return attempts


@pytest.fixture
def records(tmp_path: Path) -> Path:
    return tmp_path / "records"


@dataclass
class Durable:
    """A server in durable mode on the session's Temporal dev server, and a client of it."""

    env: dict[str, str]
    server: ServerProcess
    client: A2AClient


@pytest.fixture
async def durable(temporal_server, server_factory, records: Path) -> AsyncIterator[Durable]:
    env = durable_env(temporal_server.address, records)
    server = server_factory(env)
    client = await make_client(server.url)
    try:
        yield Durable(env, server, client)
    finally:
        await client.close()


async def scripted_events(client: A2AClient, **script: Any) -> list[StreamResponse]:
    """Stream one scripted message to its end; every event of it."""
    return [e async for e in stream_events(client, scripted_message(**script))]


async def test_happy_path_streams_through_three_activities(
    temporal_server, durable: Durable
) -> None:
    env, server, client = durable.env, durable.server, durable.client
    ready = (await readyz(server.url)).json()
    assert ready["mode"] == "durable"
    events = await scripted_events(client, chunks=4)
    task_id = events[0].task.id
    assert streamed_text(events) == "c0 c1 c2 c3 "
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "c0 c1 c2 c3 "
    assert task.metadata["molecule.mode"] == "durable"

    history = await history_of(temporal_server.address, wf_id(env, task_id), "completed")
    assert activity_names(history) == ["task_receive", "llm_call", "task_complete"]
    assert llm_call_attempts(history) == [1]
    assert (await readyz(server.url)).json()["temporal"]["live_tasks"] == 0


async def test_retry_restarts_the_artifact(temporal_server, durable: Durable, records) -> None:
    env, client = durable.env, durable.client
    events = await scripted_events(client, chunks=3, fail_attempts=1)
    task_id = events[0].task.id
    statuses = [
        "".join(p.text for p in e.status_update.status.message.parts)
        for e in events
        if e.WhichOneof("payload") == "status_update"
    ]
    assert any("Retrying" in s and "attempt 2" in s for s in statuses), statuses
    task = await wait_terminal(client, task_id)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    # Attempt 1 streamed "c0 " before failing; the artifact holds attempt 2 only.
    assert task_text(task) == "c0 c1 c2 "
    assert streamed_text(events) == "c0 c1 c2 "
    starts = [r["attempt"] for r in read_records(records, task_id) if r["event"] == "start"]
    assert starts == [1, 2]
    history = await history_of(temporal_server.address, wf_id(env, task_id), "retried")
    assert llm_call_attempts(history) == [2]  # one activity, retried by Temporal


async def test_non_retryable_fails_after_one_attempt(
    temporal_server, durable: Durable, records
) -> None:
    env, client = durable.env, durable.client
    events = await scripted_events(client, non_retryable=True)
    task_id = events[0].task.id
    task = await wait_terminal(client, task_id)
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "can never succeed" in "".join(p.text for p in task.status.message.parts)
    starts = [r for r in read_records(records, task_id) if r["event"] == "start"]
    assert len(starts) == 1
    await history_of(temporal_server.address, wf_id(env, task_id), "non_retryable")


async def test_cancel_mid_stream(temporal_server, durable: Durable, records) -> None:
    env, server, client = durable.env, durable.server, durable.client
    stream = BackgroundStream(client, scripted_message(chunks=100, delay=0.1))
    await stream.wait_chunks(1, timeout=20)
    task_id = stream.task_id
    canceller = await make_client(server.url)
    sent = time.time()
    result = await canceller.cancel_task(CancelTaskRequest(id=task_id))
    assert result.status.state == TaskState.TASK_STATE_CANCELED
    await stream.finish(20)
    task = await wait_terminal(client, task_id)
    assert task.status.state == TaskState.TASK_STATE_CANCELED
    cancelled = [r for r in read_records(records, task_id) if r["event"] == "cancelled"]
    assert len(cancelled) == 1, read_records(records, task_id)
    # A hang bound (the answer would run 10 s): the cancel latency is a figure of bench.run.
    assert cancelled[0]["t"] - sent < 8
    assert not [r for r in read_records(records, task_id) if r["event"] == "done"]
    tclient = await Client.connect(temporal_server.address)
    desc = await tclient.get_workflow_handle(wf_id(env, task_id)).describe()
    assert desc.status == WorkflowExecutionStatus.CANCELED
    await history_of(temporal_server.address, wf_id(env, task_id), "canceled")
    await canceller.close()


async def _kill_mid_stream_and_restart(
    server_factory, env: dict[str, str], workdir: Path, *, chunks: int, delay: float
) -> tuple[str, float, A2AClient]:
    """Stream a scripted task, SIGKILL the server once 3 chunks arrived, then start it
    again on the same port and data dir. The task id, when the stream ended under the
    kill (time.monotonic()), and a client of the restarted server."""
    server = server_factory(env, workdir=workdir)
    client = await make_client(server.url)
    try:
        # The server dies under the stream.
        stream = BackgroundStream(client, scripted_message(chunks=chunks, delay=delay), may_break=True)
        await stream.wait_chunks(3, timeout=20)
        server.kill()
        await stream.finish(10)
        killed = time.monotonic()
    finally:
        await client.close()
    restarted = server_factory(env, workdir=workdir, port=server.port)
    return stream.task_id, killed, await make_client(restarted.url)


async def test_sigkill_mid_llm_call_recovers_after_restart(
    temporal_server, server_factory, records, tmp_path
) -> None:
    env = durable_env(temporal_server.address, records)
    task_id, killed, client2 = await _kill_mid_stream_and_restart(
        server_factory, env, tmp_path / "crash", chunks=15, delay=0.1
    )
    task = await wait_terminal(client2, task_id, timeout=40)
    recovery = time.monotonic() - killed
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
    expected = "".join(f"c{i} " for i in range(15))
    assert task_text(task) == expected  # one complete execution, nothing duplicated
    recs = read_records(records, task_id)
    assert len([r for r in recs if r["event"] == "done"]) == 1
    assert len({r["pid"] for r in recs if r["event"] == "start"}) == 2
    # heartbeat timeout + run, with slack for a restart on a loaded 2-core machine: a hang bound
    assert recovery < 2 + 15 * 0.1 + 20, recovery
    await client2.close()


async def test_recovered_task_can_be_followed_and_cancelled(
    temporal_server, server_factory, records, tmp_path
) -> None:
    env = durable_env(temporal_server.address, records)
    task_id, _, client2 = await _kill_mid_stream_and_restart(
        server_factory, env, tmp_path / "crash", chunks=200, delay=0.05
    )

    # SubscribeToTask follows the headless retry through the store's event log.
    followed: list = []

    async def follow() -> None:
        async for event in client2.subscribe(SubscribeToTaskRequest(id=task_id)):
            followed.append(event)

    follower = asyncio.create_task(follow())
    deadline = time.monotonic() + 30
    while not any(
        e.WhichOneof("payload") == "artifact_update" and e.artifact_update.append for e in followed
    ):
        assert time.monotonic() < deadline, followed
        await asyncio.sleep(0.05)
    starts = [r for r in read_records(records, task_id) if r["event"] == "start"]
    assert len(starts) == 2 and starts[1]["attempt"] == 2

    sent = time.time()
    result = await client2.cancel_task(CancelTaskRequest(id=task_id))
    assert result.status.state == TaskState.TASK_STATE_CANCELED
    deadline = time.monotonic() + 10
    while not [r for r in read_records(records, task_id) if r["event"] == "cancelled"]:
        assert time.monotonic() < deadline, read_records(records, task_id)
        await asyncio.sleep(0.05)
    cancelled = next(r for r in read_records(records, task_id) if r["event"] == "cancelled")
    # A hang bound (attempt 2's answer runs 10 s): the cancel latency is a figure of bench.run.
    assert cancelled["attempt"] == 2 and cancelled["t"] - sent < 8
    await asyncio.wait_for(follower, 10)
    task = await wait_terminal(client2, task_id)
    assert task.status.state == TaskState.TASK_STATE_CANCELED
    assert not [r for r in read_records(records, task_id) if r["event"] == "done"]
    await client2.close()


async def test_temporal_absent_at_start_runs_direct_then_switches_back(
    server_factory, records, tmp_path
) -> None:
    port = free_port()
    env = durable_env(f"127.0.0.1:{port}", records, TEMPORAL_RECONNECT_MAX_INTERVAL="1")
    server = server_factory(env)
    ready = (await readyz(server.url))
    assert ready.status_code == 200
    assert ready.json()["mode"] == "direct-fallback"
    client = await make_client(server.url)
    events = await scripted_events(client, chunks=2)
    task = await wait_terminal(client, events[0].task.id)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.metadata["molecule.mode"] == "direct"

    temporal = TemporalDevServer(tmp_path / "late-temporal", port=port).start()
    try:
        deadline = time.monotonic() + 20
        while (await readyz(server.url)).json()["mode"] != "durable":
            assert time.monotonic() < deadline, (await readyz(server.url)).json()
            await asyncio.sleep(0.2)
        events = await scripted_events(client, chunks=2)
        task = await wait_terminal(client, events[0].task.id)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.metadata["molecule.mode"] == "durable"
    finally:
        await client.close()
        temporal.stop()


async def test_temporal_killed_mid_task_is_never_rerun_directly(
    server_factory, records, tmp_path
) -> None:
    temporal = TemporalDevServer(tmp_path / "temporal").start()
    env = durable_env(temporal.address, records, TEMPORAL_RECONNECT_MAX_INTERVAL="1")
    server = server_factory(env)
    client = await make_client(server.url)
    stream = BackgroundStream(client, scripted_message(chunks=10, delay=0.2))
    try:
        await stream.wait_chunks(1, timeout=20)
        task_id = stream.task_id
        temporal.kill()
        killed_at = time.time()
        # While Temporal is down, new tasks run directly (decided before they start).
        deadline = time.monotonic() + 15
        while (await readyz(server.url)).json()["mode"] != "direct-fallback":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        other = await make_client(server.url)
        direct_events = await scripted_events(other, chunks=2)
        direct_task = await wait_terminal(other, direct_events[0].task.id)
        assert direct_task.metadata["molecule.mode"] == "direct"
        await other.close()

        temporal = TemporalDevServer(tmp_path / "temporal", port=temporal.port).start()
        await stream.finish(60)
        task = await wait_terminal(client, task_id, timeout=60)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task_text(task) == "".join(f"c{i} " for i in range(10))
        assert task.metadata["molecule.mode"] == "durable"
        recs = read_records(records, task_id)
        # A direct re-run would start again as attempt 1; only Temporal retries
        # (attempt >= 2) may follow the outage.
        assert next(r for r in recs if r["event"] == "start" and r["attempt"] == 1)["t"] < killed_at
        assert all(r["attempt"] >= 2 for r in recs if r["event"] == "start" and r["t"] > killed_at)
    finally:
        stream.cancel()
        await client.close()
        temporal.stop()


async def test_two_servers_share_queue_without_cross_talk(
    temporal_server, server_factory, records, tmp_path
) -> None:
    env = durable_env(
        temporal_server.address,
        records,
        TASK_STORE_URL=f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
    )
    servers = [server_factory(env), server_factory(env)]
    clients = [await make_client(s.url) for s in servers]

    async def run(i: int, j: int) -> tuple[str, str, set[str]]:
        label = f"s{i}t{j}-"
        events = [
            e
            async for e in stream_events(clients[i], scripted_message(chunks=4, delay=0.02, label=label))
        ]
        ids = {e.task.id if e.WhichOneof("payload") == "task" else getattr(e, e.WhichOneof("payload")).task_id for e in events}
        return label, streamed_text(events), ids

    results = await asyncio.gather(*(run(i, j) for i in range(2) for j in range(5)))
    for label, text, ids in results:
        assert text == "".join(f"{label}{k} " for k in range(4))
        assert len(ids) == 1
    for c in clients:
        await c.close()


async def test_resend_is_idempotent_and_registry_drains(
    temporal_server, durable: Durable, records
) -> None:
    env, server, client = durable.env, durable.server, durable.client
    events = await scripted_events(client, chunks=2)
    task_id = events[0].task.id
    await wait_terminal(client, task_id)
    # Re-sending to a finished task is refused, and nothing runs again.
    resend = scripted_message(chunks=2)
    resend.task_id = task_id
    resend.context_id = events[0].task.context_id
    with pytest.raises(Exception):  # noqa: B017 - the SDK's error type varies by transport
        _ = [e async for e in stream_events(client, resend)]
    # Starting the same workflow id again returns the existing run.
    tclient = await Client.connect(temporal_server.address)
    handle = tclient.get_workflow_handle(wf_id(env, task_id))
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    starts = [r for r in read_records(records, task_id) if r["event"] == "start"]
    assert len(starts) == 1

    async def one(k: int) -> None:
        script = {"chunks": 2}
        if k % 3 == 1:
            script = {"non_retryable": True}
        await scripted_events(client, **script)

    await asyncio.gather(*(one(k) for k in range(30)))
    assert (await readyz(server.url)).json()["temporal"]["live_tasks"] == 0
