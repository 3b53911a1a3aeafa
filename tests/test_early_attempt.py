"""A new durable task's first attempt begins as soon as Temporal has accepted its
workflow, outside `llm_call`, and `llm_call`'s first attempt takes it over: the
adapter runs once per attempt, its failure is retried by Temporal as any
attempt's, and an early attempt nobody takes is stopped (durable/early.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from molecule_runtime.durable.early import DROPPED_TYPE, EarlyAttempt
from molecule_runtime.durable.watch import MARGIN, LlmCallWatch
from molecule_runtime.durable.worker import WORKFLOW_RUNNER
from molecule_runtime.execution.attempt import AttemptResult
from molecule_runtime.sdk_seam import started_eagerly
from molecule_runtime.vocabulary import Stage
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
    early = EarlyAttempt(asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 1.3)
    await started.wait()
    await asyncio.sleep(0.15)
    early.restart_clock()  # the workflow's first task ran here: 1.3 s - MARGIN from now
    await asyncio.sleep(0.1)
    assert not early.task.done()
    await asyncio.sleep(0.4)
    assert early.task.cancelled() and stopped == ["cancelled"]
    with pytest.raises(ApplicationError) as raised:
        early.take()
    assert raised.value.type == DROPPED_TYPE and not raised.value.non_retryable


async def test_while_temporal_says_llm_call_is_on_its_way_the_early_attempt_goes_on() -> None:
    answers: list[float | None] = [0.2, 0.2, None]
    asked: list[float] = []

    async def check() -> float | None:
        asked.append(asyncio.get_running_loop().time())
        return answers.pop(0)

    started, stopped = asyncio.Event(), []
    early = EarlyAttempt(
        asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 0.1, check=check
    )
    await asyncio.wait({early.task}, timeout=10)
    assert len(asked) == 3 and early.task.cancelled() and stopped == ["cancelled"]
    assert asked[1] - asked[0] >= 0.2 and asked[2] - asked[1] >= 0.2  # each answer's wait kept
    # Taken while a check is under way: the check's answer no longer matters.
    started, stopped = asyncio.Event(), []
    gate = asyncio.Event()

    async def slow_check() -> float | None:
        await gate.wait()
        return None

    early = EarlyAttempt(
        asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 0.05, check=slow_check
    )
    await asyncio.sleep(0.1)
    taken = early.take()
    gate.set()
    await asyncio.sleep(0.05)
    assert not taken.done() and stopped == []
    taken.cancel()
    await asyncio.wait({taken})


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


async def test_an_ended_attempt_nobody_took_asks_to_report_its_answer_until_told_to_stop() -> None:
    asked: list[int] = []
    answers: list[float | None] = [0.05, None]

    async def report(result: AttemptResult) -> float | None:
        asked.append(result.produced)
        return answers.pop(0)

    async def done() -> AttemptResult:
        return AttemptResult(produced=7)

    early = EarlyAttempt(asyncio.create_task(done()), str(uuid.uuid4()), 30, report=report, report_after=0.1)
    await asyncio.sleep(0.05)
    assert asked == []  # llm_call usually takes it within report_after
    await asyncio.sleep(0.3)
    assert asked == [7, 7]  # asked again after the wait it was given, then told to stop
    await asyncio.sleep(0.2)
    assert asked == [7, 7]
    await early.drop()
    # Taken in time, or failed: never asked.
    taken = EarlyAttempt(asyncio.create_task(done()), str(uuid.uuid4()), 30, report=report, report_after=0.05)
    taken.take()

    async def fails() -> AttemptResult:
        raise RuntimeError("boom")

    failed = EarlyAttempt(asyncio.create_task(fails()), str(uuid.uuid4()), 30, report=report, report_after=0.05)
    await asyncio.sleep(0.2)
    assert asked == [7, 7] and failed.task.done()
    await failed.drop()


async def test_an_eagerly_started_workflow_gives_its_first_task_time_before_the_clock_runs() -> None:
    started, stopped = asyncio.Event(), []
    early = EarlyAttempt(
        asyncio.create_task(_generation(started, stopped)), str(uuid.uuid4()), 0.1, eager=True
    )
    await asyncio.sleep(0.4)
    assert not early.task.done()  # the first task's own timeout (10 s) comes first
    early.restart_clock()  # task_receive ran here: schedule-to-start counts from now
    await asyncio.sleep(0.2)
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


@workflow.defn(name="LlmCallProbe")
class LlmCallProbe:
    @workflow.run
    async def run(self, queue: str) -> str:
        return await workflow.execute_activity(
            Stage.LLM_CALL,
            "x",
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_start_timeout=timedelta(seconds=60),
        )


async def _until_state(handle, state: int) -> None:
    async with asyncio.timeout(30):
        while True:
            described = await handle.describe()
            pending = described.raw_description.pending_activities
            if pending and pending[0].state == state:
                return
            await asyncio.sleep(0.1)


@pytest.mark.temporal
async def test_the_watch_reads_where_llm_call_stands_in_temporal(temporal_server) -> None:
    """LlmCallWatch against a real workflow whose llm_call is scheduled on a queue
    nobody polls yet, then started by a worker, lost with it (the retry comes to
    the same queue), started again, then finished."""
    client = await Client.connect(temporal_server.address)
    tag = uuid.uuid4().hex[:8]
    flows, calls = f"flows-{tag}", f"calls-{tag}"
    release = asyncio.Event()

    @activity.defn(name=Stage.LLM_CALL)
    async def llm_call(_: str) -> str:
        await release.wait()
        return "done"

    async with Worker(client, task_queue=flows, workflows=[LlmCallProbe], workflow_runner=WORKFLOW_RUNNER):
        handle = await client.start_workflow(LlmCallProbe.run, calls, id=f"w-{tag}", task_queue=flows)
        mine = LlmCallWatch(handle, calls, "me", 20.0)
        await _until_state(handle, PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED)
        left = await mine()
        assert left is not None and 15.0 < left <= 20.0 - MARGIN, left  # scheduled just now
        elsewhere = LlmCallWatch(handle, calls, "me", 0.5)
        assert await elsewhere() is None  # past its schedule-to-start: Temporal may move it
        async with Worker(client, task_queue=calls, activities=[llm_call], identity="me"):
            await _until_state(handle, PendingActivityState.PENDING_ACTIVITY_STATE_STARTED)
            assert await mine() == 20.0  # handed to this process's worker: it comes
        # That worker went away with attempt 1: attempt 2 waits on the same queue,
        # for this process, with a schedule-to-start window of its own.
        await _until_state(handle, PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED)
        left = await mine()  # counted from when the retry is due (1 s back-off)
        assert left is not None and 15.0 < left <= 20.0, left
        async with Worker(client, task_queue=calls, activities=[llm_call], identity="me"):
            await _until_state(handle, PendingActivityState.PENDING_ACTIVITY_STATE_STARTED)
            described = await handle.describe()
            assert described.raw_description.pending_activities[0].attempt == 2
            assert await mine() == 20.0
            assert await LlmCallWatch(handle, calls, "another", 20.0)() is None
            release.set()
            assert await handle.result() == "done"
        assert await mine() is None  # the workflow ended
