"""The pulse thread keeps a blocked event loop's activity alive and stops for a hung
one; the temporalio privates it relies on (sdk_seam.heartbeat_sender) are pinned by
the first test's count of beats the core took.

A real Temporal dev server and a real temporalio worker in this process; the
activity freezes the event loop with time.sleep, as a busy or broken process would.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from molecule_runtime.durable.pulse import STALL_TIMEOUTS, Pulse, PulseInterceptor
from molecule_runtime.sdk_seam import heartbeat_sender

pytestmark = pytest.mark.temporal

HEARTBEAT_TIMEOUT = 1.0
attempts: list[int] = []


@activity.defn(name="freeze")
async def freeze(seconds: float) -> int:
    attempts.append(activity.info().attempt)
    activity.heartbeat()
    if activity.info().attempt == 1:
        time.sleep(seconds)  # noqa: ASYNC251 - the point: the loop cannot heartbeat
    activity.heartbeat()
    return activity.info().attempt


@workflow.defn(name="freezing")
class Freezing:
    @workflow.run
    async def run(self, seconds: float) -> int:
        return await workflow.execute_activity(
            freeze,
            seconds,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=0.2), maximum_attempts=3),
        )


async def run_frozen(address: str, seconds: float) -> tuple[int, Pulse]:
    client = await Client.connect(address)
    queue = f"pulse-{uuid.uuid4().hex[:8]}"
    pulse = Pulse(interval=0.3, heartbeat_timeout=HEARTBEAT_TIMEOUT)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[Freezing],
        activities=[freeze],
        workflow_runner=UnsandboxedWorkflowRunner(),
        interceptors=[PulseInterceptor(pulse)],
        max_heartbeat_throttle_interval=timedelta(seconds=0.1),
        default_heartbeat_throttle_interval=timedelta(seconds=0.1),
    )
    pulse.serve(queue, worker)
    pulse.start()
    attempts.clear()
    try:
        async with worker:
            result = await client.execute_workflow(
                Freezing.run, seconds, id=f"pulse-{uuid.uuid4()}", task_queue=queue,
                execution_timeout=timedelta(seconds=90),
            )
    finally:
        pulse.stop()
    return result, pulse


async def test_a_loop_frozen_past_the_heartbeat_timeout_keeps_its_attempt(temporal_server) -> None:
    result, pulse = await run_frozen(temporal_server.address, 3 * HEARTBEAT_TIMEOUT)
    assert result == 1 and attempts == [1]
    # Counted only when the core took them: fails if the worker privates the seam
    # uses (Worker._activity_worker._bridge_worker) change.
    assert pulse.beats_sent >= 3


async def test_a_loop_frozen_past_the_stall_limit_is_taken_for_hung(temporal_server) -> None:
    result, _ = await run_frozen(temporal_server.address, STALL_TIMEOUTS * HEARTBEAT_TIMEOUT + 2.5)
    # Attempt 1 timed out while frozen; a later one ran once the loop turned again
    # (attempt 2 may be handed to the frozen process and time out there too).
    assert result >= 2 and attempts[0] == 1 and attempts[-1] == result, attempts


def test_heartbeat_sender_reaches_the_core_of_a_running_worker_only() -> None:
    class NoActivities:
        _activity_worker = None

    heartbeat_sender(NoActivities())(b"token")  # a worker without activities: nothing to do
