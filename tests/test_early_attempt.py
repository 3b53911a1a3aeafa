"""A new durable task's first attempt begins as soon as Temporal has accepted its
workflow, outside `llm_call`, and `llm_call`'s first attempt takes it over: the
adapter runs once per attempt, its failure is retried by Temporal as any
attempt's, and an early attempt nobody takes is stopped (durable/early.py)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from molecule_runtime.durable.early import DROPPED_TYPE, EarlyAttempt
from molecule_runtime.durable.worker import WORKFLOW_RUNNER
from molecule_runtime.execution.attempt import AttemptResult
from molecule_runtime.sdk_seam import started_eagerly
from tests.fixtures.scripted_adapter import read_records
from tests.support.durable import durable_env
from tests.support.scripted_answers import expected, parts_text, wait_done
from tests.support.sse import A2A, sse_frames, state_of, stream_request


async def _stream(http: httpx.AsyncClient, base: str, metadata: dict) -> tuple[str, list[dict]]:
    method, url, body = stream_request("JSONRPC", base, "go", metadata)
    frames: list[dict] = []
    async with asyncio.timeout(60):
        async with http.stream(method, url, json=body, headers=A2A) as response:
            async for _, payload in sse_frames(response):
                frames.append(payload)
    first = frames[0].get("task") or frames[0].get("statusUpdate") or {}
    return first.get("id") or first["taskId"], frames


def _starts(records: Path, task_id: str) -> list[dict]:
    return [r for r in read_records(records, task_id) if r["event"] == "start"]


@pytest.mark.temporal
async def test_the_first_attempt_runs_once_outside_llm_call_then_a_failure_is_retried_inside(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    server = server_factory(durable_env(temporal_server.address, records, STREAM_BATCH_WINDOW="0"))
    async with httpx.AsyncClient(timeout=30) as http:
        task_id, frames = await _stream(http, server.url, {"chunks": 4, "delay": 0.05})
        assert state_of(frames[-1]) == "TASK_STATE_COMPLETED"
        task = await wait_done(http, server.url, task_id, 30)
        assert "".join(parts_text(task)) == expected(4)
        runs = _starts(records, task_id)
        assert [(r["attempt"], r["in_activity"]) for r in runs] == [(1, False)], runs
        assert task["metadata"]["molecule.mode"] == "durable"

        # The early attempt fails after its first chunk: llm_call reports it,
        # Temporal retries, the retry runs inside llm_call and completes the task.
        task_id, frames = await _stream(http, server.url, {"chunks": 3, "fail_attempts": 1})
        task = await wait_done(http, server.url, task_id, 30)
        assert task["status"]["state"] == "TASK_STATE_COMPLETED", task["status"]
        assert "".join(parts_text(task)) == expected(3)
        runs = _starts(records, task_id)
        assert [(r["attempt"], r["in_activity"]) for r in runs] == [(1, False), (2, True)], runs


@pytest.mark.temporal
async def test_switched_off_the_first_attempt_begins_in_llm_call(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    server = server_factory(
        durable_env(temporal_server.address, records, TEMPORAL_EARLY_ATTEMPT="false")
    )
    async with httpx.AsyncClient(timeout=30) as http:
        task_id, frames = await _stream(http, server.url, {"chunks": 3})
        assert state_of(frames[-1]) == "TASK_STATE_COMPLETED"
        assert "".join(parts_text(await wait_done(http, server.url, task_id, 30))) == expected(3)
        runs = _starts(records, task_id)
        assert [(r["attempt"], r["in_activity"]) for r in runs] == [(1, True)], runs


async def _generation(started: asyncio.Event, stopped: list[str]) -> AttemptResult:
    started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        stopped.append("cancelled")
        raise
    return AttemptResult(produced=1)


async def test_an_early_attempt_not_taken_in_time_is_stopped_and_its_take_is_retried() -> None:
    started, stopped = asyncio.Event(), []
    early = EarlyAttempt(asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 0.2)
    await started.wait()
    await asyncio.sleep(0.15)
    early.restart_clock()  # the workflow's first task ran here: 0.2 s from now
    await asyncio.sleep(0.1)
    assert not early.task.done()
    await asyncio.sleep(0.3)
    assert early.task.cancelled() and stopped == ["cancelled"]
    with pytest.raises(ApplicationError) as raised:
        early.take()
    assert raised.value.type == DROPPED_TYPE and not raised.value.non_retryable


async def test_a_taken_early_attempt_is_not_stopped_by_the_deadline_or_a_drop() -> None:
    started, stopped = asyncio.Event(), []
    early = EarlyAttempt(asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 0.1)
    taken = early.take()
    await asyncio.sleep(0.3)
    await early.drop()
    assert not taken.done() and stopped == []
    taken.cancel()
    await asyncio.wait({taken})
    # Not taken: the workflow ended without it, so a drop stops it.
    started, stopped = asyncio.Event(), []
    early = EarlyAttempt(asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 30)
    await started.wait()
    await early.drop()
    assert early.task.cancelled() and stopped == ["cancelled"]


async def test_an_eagerly_started_workflow_gives_its_first_task_time_before_the_clock_runs() -> None:
    started, stopped = asyncio.Event(), []
    early = EarlyAttempt(
        asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 0.1, eager=True
    )
    await asyncio.sleep(0.4)
    assert not early.task.done()  # the first task's own timeout (10 s) comes first
    early.restart_clock()  # task_receive ran here: schedule-to-start counts from now
    await asyncio.sleep(0.4)
    assert early.task.cancelled() and stopped == ["cancelled"]


@workflow.defn(name="EagerProbe")
class EagerProbe:
    @workflow.run
    async def run(self) -> str:
        return "ok"


@pytest.mark.temporal
async def test_temporalio_tells_whether_the_start_was_eager(temporal_server) -> None:
    """Pins the SDK behaviour sdk_seam.started_eagerly relies on (a private attribute)."""
    client = await Client.connect(temporal_server.address)
    queue = f"eager-probe-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[EagerProbe], workflow_runner=WORKFLOW_RUNNER):
        eager = await client.start_workflow(
            EagerProbe.run, id=f"e-{uuid.uuid4()}", task_queue=queue, request_eager_start=True
        )
        plain = await client.start_workflow(EagerProbe.run, id=f"p-{uuid.uuid4()}", task_queue=queue)
        assert started_eagerly(eager) and not started_eagerly(plain)
        assert await eager.result() == "ok" and await plain.result() == "ok"
