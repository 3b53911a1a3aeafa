"""An `llm_call` attempt handed back at shutdown is run again on the shared queue
(by a process that stays), never on the queue of the process that handed it back,
and the hand-back is not counted as a failed attempt.

Real Temporal and the real workflow; the activities play a leaving process (its
own queue hands every attempt back, as TaskActivities does once it hands its
tasks over) and the processes that stay (the shared queue). The workflow's
history is also the replay fixture of this path (MOLECULE_RECORD_HISTORIES=1).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from molecule_runtime.durable.attempt_edges import handed_back
from molecule_runtime.durable.types import (
    WORKFLOW_NAME,
    CompleteInput,
    LlmCallInput,
    LlmCallResult,
    ReceiveResult,
    TaskOutcome,
    TaskRef,
    WorkflowInput,
)
from molecule_runtime.durable.worker import WORKFLOW_RUNNER
from molecule_runtime.durable.workflow import HANDBACK_PATCH, AgentTaskWorkflow
from molecule_runtime.vocabulary import Outcome, Stage

pytestmark = pytest.mark.temporal

FIXTURE = Path(__file__).parent / "fixtures" / "histories" / "handed_back.json"


class Processes:
    def __init__(self, shared_hand_backs: int = 0) -> None:
        self.own: list[tuple[int, int]] = []  # (attempt_base, attempt) seen on the own queue
        self.shared: list[tuple[int, int]] = []
        self.completed: list[CompleteInput] = []
        self.shared_hand_backs = shared_hand_backs

    @activity.defn(name=Stage.TASK_RECEIVE)
    async def receive(self, ref: TaskRef) -> ReceiveResult:
        return ReceiveResult(proceed=True)

    @activity.defn(name=Stage.TASK_COMPLETE)
    async def complete(self, inp: CompleteInput) -> None:
        self.completed.append(inp)

    @activity.defn(name=Stage.LLM_CALL)
    async def leaving(self, inp: LlmCallInput) -> LlmCallResult:
        info = activity.info()
        self.own.append((inp.attempt_base, info.attempt))
        assert inp.ref is not None
        raise handed_back(inp.ref.task_id, inp.attempt_base + info.attempt, info.attempt, "shutting down")

    @activity.defn(name=Stage.LLM_CALL)
    async def staying(self, inp: LlmCallInput) -> LlmCallResult:
        info = activity.info()
        self.shared.append((inp.attempt_base, info.attempt))
        assert inp.ref is not None
        if len(self.shared) <= self.shared_hand_backs:
            # Taken by another process that is leaving too.
            raise handed_back(inp.ref.task_id, inp.attempt_base + info.attempt, info.attempt, "also leaving")
        return LlmCallResult(produced=5)


async def _run(address: str, processes: Processes) -> tuple[TaskOutcome, list[dict]]:
    client = await Client.connect(address)
    shared, own = f"shared-{uuid.uuid4().hex[:8]}", f"own-{uuid.uuid4().hex[:8]}"
    task_id = str(uuid.uuid4())
    staying = Worker(
        client,
        task_queue=shared,
        workflows=[AgentTaskWorkflow],
        activities=[processes.receive, processes.staying, processes.complete],
        # As in production (the sandbox runs in tests/test_replay.py). Sandboxed, a
        # collection in its thread could finalize another test's leftover a2a-sdk
        # coroutine there, whose queue shutdown then blocks the worker for good.
        workflow_runner=WORKFLOW_RUNNER,
    )
    leaving = Worker(client, task_queue=own, activities=[processes.leaving])
    async with staying, leaving:
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            WorkflowInput(
                workspace_id="ws",
                process_queue=own,
                shared_queue=shared,
                heartbeat_timeout=10,
                activity_timeout=60,
                schedule_to_start_timeout=30,
                max_attempts=3,
                retry_initial_interval=0.1,
                ref=TaskRef(task_id, "ctx", "m1"),
            ),
            id=f"handback-{task_id}",
            task_queue=shared,
            result_type=TaskOutcome,
        )
        outcome = await handle.result()
        history = await handle.fetch_history()
    return outcome, json.loads(history.to_json())["events"]


def _llm_call_queues(events: list[dict]) -> list[str]:
    return [
        e["activityTaskScheduledEventAttributes"]["taskQueue"]["name"]
        for e in events
        if e.get("activityTaskScheduledEventAttributes", {}).get("activityType", {}).get("name")
        == Stage.LLM_CALL
    ]


async def test_a_hand_back_is_retried_on_the_shared_queue_as_the_next_attempt(temporal_server) -> None:
    processes = Processes()
    outcome, events = await _run(temporal_server.address, processes)
    assert outcome.state == Outcome.COMPLETED, outcome
    # Once on the leaving process's queue, never again; then a process that stays.
    assert processes.own == [(0, 1)]
    assert processes.shared == [(1, 1)]  # the adapter sees attempt 2
    queues = _llm_call_queues(events)
    assert len(queues) == 2 and queues[0].startswith("own-") and queues[1].startswith("shared-")
    assert [c.state for c in processes.completed] == [Outcome.COMPLETED]
    if os.environ.get("MOLECULE_RECORD_HISTORIES") == "1":
        FIXTURE.write_text(json.dumps({"events": events}, indent=2))


async def test_hand_backs_do_not_use_up_the_attempts(temporal_server) -> None:
    """Three hand-backs in a row (a rolling deploy through every replica) with
    at most three attempts: the task still runs, the count goes on."""
    processes = Processes(shared_hand_backs=2)
    outcome, events = await _run(temporal_server.address, processes)
    assert outcome.state == Outcome.COMPLETED, outcome
    assert processes.own == [(0, 1)]
    assert processes.shared == [(1, 1), (2, 1), (3, 1)]
    patches = {
        json.loads(base64.b64decode(m["details"]["patch-data"]["payloads"][0]["data"]))["id"]
        for m in (e["markerRecordedEventAttributes"] for e in events if "markerRecordedEventAttributes" in e)
        if m["markerName"] == "core_patch"
    }
    assert HANDBACK_PATCH in patches, "the hand-back path is not behind its patch marker"
