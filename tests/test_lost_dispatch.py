"""A first `llm_call` attempt that Temporal started but that never reached the
process costs no second run of the adapter: the retry, which comes to the same
process's queue, takes over the early attempt nobody took, and an early attempt
that has ended reports its answer by activity id before the heartbeat timeout
(durable/early.py, durable/llm_call.py).

Real Temporal, a real server process: its worker runs one activity at a time
(`TEMPORAL_MAX_CONCURRENT_ACTIVITIES=1`), so while a first task's `llm_call`
holds that slot the process does not poll its queue, and the test's own poll,
with the process's worker identity, takes the second task's first attempt and
drops it, as a lost dispatch would.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollActivityTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from molecule_runtime.durable.types import workflow_id
from molecule_runtime.vocabulary import Stage
from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env
from tests.support.scripted_answers import expected, parts_text, wait_done
from tests.support.sse import A2A, sse_frames, state_of, stream_request

pytestmark = pytest.mark.temporal


async def _stream(
    http: httpx.AsyncClient, base: str, metadata: dict, task_id: asyncio.Future[str]
) -> list[dict]:
    method, url, body = stream_request("JSONRPC", base, "go", metadata)
    frames: list[dict] = []
    async with asyncio.timeout(90):
        async with http.stream(method, url, json=body, headers=A2A) as response:
            async for _, payload in sse_frames(response):
                if not frames:
                    first = payload.get("task") or payload.get("statusUpdate") or {}
                    task_id.set_result(first.get("id") or first["taskId"])
                frames.append(payload)
    return frames


async def _llm_call_started(client: Client, wf_id: str) -> None:
    handle = client.get_workflow_handle(wf_id)
    async with asyncio.timeout(30):
        while True:
            try:
                described = await handle.describe()
            except RPCError as exc:
                # The stream's first event can come before Temporal has the workflow.
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.05)
                continue
            calls = [
                p
                for p in described.raw_description.pending_activities
                if p.activity_type.name == Stage.LLM_CALL
            ]
            if calls and calls[0].state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                return
            await asyncio.sleep(0.05)


async def _lose_first_dispatch(
    temporal_server, server_factory, tmp_path: Path, lost_script: dict, **settings: str
) -> tuple[str, float, list[tuple[int, bool]], list[int], str]:
    """Run a task whose first llm_call attempt the test takes and drops: (its id,
    seconds from its start to its end, its adapter runs, the attempts of
    llm_call's started event, the server's log)."""
    records = tmp_path / "records"
    instance = f"lost-{uuid.uuid4().hex[:8]}"
    env = durable_env(
        temporal_server.address,
        records,
        MOLECULE_INSTANCE_ID=instance,
        TEMPORAL_MAX_CONCURRENT_ACTIVITIES="1",
        # The retry waits for the first task's attempt to free the slot.
        TEMPORAL_SCHEDULE_TO_START_TIMEOUT="20",
        STREAM_BATCH_WINDOW="0",
        **settings,
    )
    server = server_factory(env)
    queue = f"{env['TEMPORAL_TASK_QUEUE']}@{instance}"
    client = await Client.connect(temporal_server.address)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=60) as http:
        # The first task holds the process's only activity slot for ~8 s: until
        # then the process does not poll its queue (also on a loaded machine).
        busy_id: asyncio.Future[str] = loop.create_future()
        busy = asyncio.create_task(_stream(http, server.url, {"chunks": 20, "delay": 0.4}, busy_id))
        await _llm_call_started(client, workflow_id(env["WORKSPACE_ID"], await busy_id))

        poll = asyncio.create_task(
            client.workflow_service.poll_activity_task_queue(
                PollActivityTaskQueueRequest(
                    namespace="default",
                    task_queue=TaskQueue(name=queue),
                    identity=f"molecule-runtime@{instance}",
                ),
                timeout=timedelta(seconds=30),
            )
        )
        began = loop.time()
        lost_id: asyncio.Future[str] = loop.create_future()
        lost = asyncio.create_task(_stream(http, server.url, lost_script, lost_id))
        task_id = await lost_id
        taken = await poll
        # Started by "this process" in Temporal's eyes, and never run: lost.
        assert taken.task_token, "the test's poll got no task"
        assert taken.workflow_execution.workflow_id == workflow_id(env["WORKSPACE_ID"], task_id)
        assert (taken.activity_type.name, taken.attempt) == (Stage.LLM_CALL, 1)

        frames = await lost
        took = loop.time() - began
        assert state_of(frames[-1]) == "TASK_STATE_COMPLETED", frames[-1]
        task = await wait_done(http, server.url, task_id, 30)
        assert "".join(parts_text(task)) == expected(int(lost_script["chunks"]))
        runs = [
            (r["attempt"], r["in_activity"])
            for r in read_records(records, task_id)
            if r["event"] == "start"
        ]
        busy_frames = await busy
        assert state_of(busy_frames[-1]) == "TASK_STATE_COMPLETED"

    history = await client.get_workflow_handle(workflow_id(env["WORKSPACE_ID"], task_id)).fetch_history()
    started = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    return task_id, took, runs, started, server.log()


async def test_a_lost_first_dispatch_is_taken_over_by_the_retry_without_a_second_run(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    # Still generating when the retry comes (heartbeat timeout 2 s, the slot free at ~8 s).
    _, _, runs, started, log = await _lose_first_dispatch(
        temporal_server, server_factory, tmp_path, {"chunks": 60, "delay": 0.2}
    )
    assert runs == [(1, False)], runs  # the early attempt, never run again
    assert started == [2], started  # attempt 1 timed out on heartbeats; 2 reported the answer
    assert "takes over the first attempt" in log


async def test_an_answer_ready_before_the_heartbeat_timeout_is_reported_by_id(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    _, took, runs, started, log = await _lose_first_dispatch(
        temporal_server,
        server_factory,
        tmp_path,
        {"chunks": 4, "delay": 0.2},
        TEMPORAL_HEARTBEAT_TIMEOUT="30",
    )
    assert runs == [(1, False)], runs
    assert started == [1], started  # completed by id: no retry
    # Reported 5 s after attempt 1 started, not after the 30-s heartbeat timeout.
    assert took < 20, took
    assert "reported by activity id" in log
