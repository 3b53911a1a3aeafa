"""An attempt held back by a busy event loop is measured and warned about
(durable/pulse.py `note_dispatch`): Temporal runs its heartbeat timeout from
the moment the worker's core took it, before its code could run here.

A real Temporal dev server and a real temporalio worker in this process: two
activities are started at once, and the first to run freezes the event loop,
so the other reaches it that much later.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from molecule_runtime.durable.pulse import note_dispatch
from molecule_runtime.observability import metrics

pytestmark = pytest.mark.temporal

FREEZE = 3.0
HEARTBEAT_TIMEOUT = 5.0  # the warning comes past half of it
waited: list[float] = []


@activity.defn(name="dispatched")
async def dispatched() -> None:
    waited.append(note_dispatch(activity.info()))
    if len(waited) == 1:
        time.sleep(FREEZE)  # noqa: ASYNC251 - the point: the other one cannot reach the loop


@workflow.defn(name="two-at-once")
class TwoAtOnce:
    @workflow.run
    async def run(self) -> None:
        options = {
            "start_to_close_timeout": timedelta(seconds=60),
            "heartbeat_timeout": timedelta(seconds=HEARTBEAT_TIMEOUT),
            "retry_policy": RetryPolicy(maximum_attempts=1),
        }
        await asyncio.gather(
            workflow.execute_activity(dispatched, **options),  # type: ignore[arg-type]
            workflow.execute_activity(dispatched, **options),  # type: ignore[arg-type]
        )


def samples() -> float:
    for metric in metrics.DISPATCH_DELAY.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return sample.value
    return 0.0


async def test_an_attempt_held_back_by_a_busy_loop_is_measured_and_warned_about(
    temporal_server, caplog: pytest.LogCaptureFixture
) -> None:
    client = await Client.connect(temporal_server.address)
    queue = f"dispatch-{uuid.uuid4().hex[:8]}"
    before = samples()
    waited.clear()
    with caplog.at_level(logging.WARNING, logger="molecule_runtime.durable.pulse"):
        async with Worker(
            client,
            task_queue=queue,
            workflows=[TwoAtOnce],
            activities=[dispatched],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            await client.execute_workflow(
                TwoAtOnce.run, id=f"dispatch-{uuid.uuid4()}", task_queue=queue,
                execution_timeout=timedelta(seconds=60),
            )
    assert len(waited) == 2
    # The second waited for the frozen loop (the first as long as a busy machine made it).
    assert waited[1] >= FREEZE * 0.8, waited
    assert waited[1] - waited[0] >= FREEZE * 0.5, waited
    assert samples() == before + 2
    warnings = [r.getMessage() for r in caplog.records if "reached this process" in r.getMessage()]
    assert warnings, "no warning for an attempt that waited past half its heartbeat timeout"
    assert "heartbeat timeout 5 s" in warnings[-1]
