"""Workflows of the benchmark's Temporal baselines (orchestration only; activities live elsewhere).

- `FloorSameShape` (floor B): what Temporal alone costs for *our* shape — local
  receive, a regular activity on the process's own queue, local complete —
  with no-op activities;
- `FloorRegular` (floor B, regular variant): three regular no-op activities on
  one shared queue, the Temporal floor of the reference design;
- `ReferenceTaskWorkflow` (design C): the design this project replaces, reduced
  to its performance-relevant shape: three regular activities on one shared
  task queue, no local activities, no eager start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

ACTIVITY_TIMEOUT = timedelta(seconds=600)
HEARTBEAT_TIMEOUT = timedelta(seconds=30)


@dataclass
class FloorInput:
    process_queue: str


@dataclass
class ReferenceInput:
    task_id: str
    context_id: str
    text: str
    metadata_json: str


@workflow.defn(name="BenchFloorSameShape")
class FloorSameShape:
    @workflow.run
    async def run(self, inp: FloorInput) -> str:
        await workflow.execute_local_activity("b_receive", start_to_close_timeout=ACTIVITY_TIMEOUT)
        await workflow.execute_activity(
            "b_llm",
            task_queue=inp.process_queue,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            schedule_to_start_timeout=timedelta(seconds=10),
        )
        await workflow.execute_local_activity("b_complete", start_to_close_timeout=ACTIVITY_TIMEOUT)
        return "ok"


@workflow.defn(name="BenchFloorRegular")
class FloorRegular:
    @workflow.run
    async def run(self, inp: FloorInput) -> str:
        for name in ("b_receive", "b_llm", "b_complete"):
            await workflow.execute_activity(
                name, start_to_close_timeout=ACTIVITY_TIMEOUT, heartbeat_timeout=HEARTBEAT_TIMEOUT
            )
        return "ok"


@workflow.defn(name="BenchReferenceTask")
class ReferenceTaskWorkflow:
    @workflow.run
    async def run(self, inp: ReferenceInput) -> str:
        retry = RetryPolicy(maximum_attempts=3)
        await workflow.execute_activity(
            "ref_receive", inp, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=retry
        )
        await workflow.execute_activity(
            "ref_llm_call",
            inp,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=retry,
        )
        await workflow.execute_activity(
            "ref_complete", inp, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=retry
        )
        return "completed"
