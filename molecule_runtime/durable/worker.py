"""The Temporal workers of this process, on its own event loop: the shared queue
(workflows and all three activities) and, in a process that takes tasks, its own
queue, where `llm_call` runs next to the client's stream."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

from molecule_runtime.config import Settings
from molecule_runtime.durable.activities import TaskActivities
from molecule_runtime.durable.pulse import Pulse, PulseInterceptor
from molecule_runtime.durable.workflow import AgentTaskWorkflow

log = logging.getLogger(__name__)


def worker_identity(settings: Settings) -> str:
    """How this process's workers show in Temporal (pollers, activity attempts)."""
    return f"molecule-runtime@{settings.resolved_instance_id}"


# The workflow is the runtime's own, fixed code: the sandbox that guards it
# against nondeterministic calls runs in the replay tests (tests/test_replay.py,
# every recorded history). In production it cost ~15 ms of the event loop per
# task (an instance per workflow, code executed per payload) under a burst.
WORKFLOW_RUNNER = UnsandboxedWorkflowRunner()
POLLS = 20


class TaskWorkers:
    def __init__(self, settings: Settings, activities: TaskActivities, *, accept_tasks: bool) -> None:
        self.settings = settings
        self.activities = activities
        self.accept_tasks = accept_tasks
        self._workers: list[Worker] = []
        self._runs: list[asyncio.Task[None]] = []
        self.pulse = Pulse(
            interval=activities.heartbeat_interval, heartbeat_timeout=settings.temporal_heartbeat_timeout
        )

    @property
    def queues(self) -> list[str]:
        return [w.task_queue for w in self._workers]

    def start(self, client: Client) -> None:
        s = self.settings
        acts = self.activities
        common: dict[str, Any] = {
            # Heartbeat replies carry cancel requests: the activity paces its
            # heartbeats itself (faster while a cancel it asked for is on its way).
            "max_heartbeat_throttle_interval": timedelta(seconds=0.1),
            "default_heartbeat_throttle_interval": timedelta(seconds=0.1),
            "graceful_shutdown_timeout": timedelta(seconds=s.shutdown_grace),
            "max_concurrent_activities": s.temporal_max_concurrent_activities,
            "identity": worker_identity(s),
            # A burst of new tasks otherwise waits on the default 5 polls: 100
            # tasks took ~0.7 s p50 from llm_call scheduled to started, ~0.1 s with 20.
            "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(POLLS),
            "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(POLLS),
            # Heartbeats a busy event loop cannot delay (pulse.py).
            "interceptors": [PulseInterceptor(self.pulse)],
        }
        self._workers = [
            Worker(
                client,
                task_queue=s.temporal_task_queue,
                workflows=[AgentTaskWorkflow],
                workflow_runner=WORKFLOW_RUNNER,
                activities=[acts.task_receive, acts.llm_call, acts.task_complete],
                # A dead worker's sticky queue would otherwise hold its
                # workflows for 10 s before another worker may take them.
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
                max_concurrent_local_activities=s.temporal_max_concurrent_activities,
                **common,
            )
        ]
        if self.accept_tasks:
            self._workers.append(
                Worker(client, task_queue=s.process_task_queue, activities=[acts.llm_call], **common)
            )
        for w in self._workers:
            self.pulse.serve(w.task_queue, w)
        self.pulse.start()
        self._runs = [
            asyncio.create_task(w.run(), name=f"temporal-worker:{w.task_queue}")
            for w in self._workers
        ]

    def stopped(self) -> bool:
        """True if a worker ended (it is then restarted by the connection's supervisor)."""
        for run in self._runs:
            if run.done() and not run.cancelled() and run.exception():
                log.warning("Temporal worker stopped: %s; restarting it", run.exception())
        return any(run.done() for run in self._runs)

    async def stop(self) -> None:
        workers, runs = self._workers, self._runs
        self._workers, self._runs = [], []
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        self.pulse.stop()
        for run in runs:
            if not run.done():
                run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
