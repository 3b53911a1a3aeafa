"""AgentTaskWorkflow's own logic on a real Temporal dev server, with stand-in activities."""

from __future__ import annotations

import uuid

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from molecule_runtime.durable.types import (
    CompleteInput,
    LlmCallInput,
    ReceiveResult,
    TaskOutcome,
    TaskRef,
    WorkflowInput,
)
from molecule_runtime.durable.worker import WORKFLOW_RUNNER
from molecule_runtime.durable.workflow import AgentTaskWorkflow

pytestmark = pytest.mark.temporal


class StandIns:
    def __init__(
        self, receive_failures: int = 0, complete_failures: int = 0, receive_refuses: bool = False
    ) -> None:
        self.receive_failures = receive_failures
        self.receive_refuses = receive_refuses
        self.complete_failures = complete_failures
        self.completed: list[CompleteInput] = []
        self.llm_calls = 0

    @activity.defn(name="task_receive")
    async def task_receive(self, ref: TaskRef) -> ReceiveResult:
        if self.receive_refuses:
            raise ApplicationError("the stored task is unreadable", non_retryable=True)
        if activity.info().attempt <= self.receive_failures:
            raise RuntimeError("store unreachable")
        return ReceiveResult(proceed=True)

    @activity.defn(name="llm_call")
    async def llm_call(self, inp: LlmCallInput) -> int:
        self.llm_calls += 1
        return 0

    @activity.defn(name="task_complete")
    async def task_complete(self, inp: CompleteInput) -> None:
        if activity.info().attempt <= self.complete_failures:
            raise RuntimeError("store unreachable")
        self.completed.append(inp)


async def run(address: str, stand_ins: StandIns) -> TaskOutcome:
    client = await Client.connect(address)
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[AgentTaskWorkflow],
        activities=[stand_ins.task_receive, stand_ins.llm_call, stand_ins.task_complete],
        # Unsandboxed as in production (tests/test_handback_queue.py says why).
        workflow_runner=WORKFLOW_RUNNER,
    )
    async with worker:
        inp = WorkflowInput(
            ref=TaskRef(task_id=str(uuid.uuid4()), context_id="c"),
            workspace_id="w",
            process_queue=queue,
            shared_queue=queue,
            heartbeat_timeout=5,
            activity_timeout=30,
            schedule_to_start_timeout=5,
            max_attempts=2,
            retry_initial_interval=0.1,
        )
        return await client.execute_workflow(
            AgentTaskWorkflow.run, inp, id=str(uuid.uuid4()), task_queue=queue
        )


async def test_a_task_that_cannot_be_accepted_still_gets_a_final_state(temporal_server) -> None:
    stand_ins = StandIns(receive_refuses=True)
    outcome = await run(temporal_server.address, stand_ins)
    assert outcome.state == "failed"
    assert "could not accept the task" in outcome.message and "unreadable" in outcome.message
    assert stand_ins.llm_calls == 0
    assert [c.state for c in stand_ins.completed] == ["failed"]


async def test_accepting_a_task_is_retried_past_any_number_of_attempts(temporal_server) -> None:
    """A store outage costs time, never the task: task_receive is retried until its
    deadline (hours), not for a number of tries (it was 5, about 2.5 minutes)."""
    stand_ins = StandIns(receive_failures=6)
    outcome = await run(temporal_server.address, stand_ins)
    assert outcome.state == "completed"
    assert stand_ins.llm_calls == 1


async def test_final_state_is_retried_until_it_lands(temporal_server) -> None:
    stand_ins = StandIns(complete_failures=3)
    outcome = await run(temporal_server.address, stand_ins)
    assert outcome.state == "completed"
    assert stand_ins.llm_calls == 1
    assert [c.state for c in stand_ins.completed] == ["completed"]
