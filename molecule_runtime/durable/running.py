"""The `llm_call` attempt of each task running in this process.

A new attempt (Temporal gave up on a stalled one) first stops the one before,
so two never write one answer at once. An attempt whose dispatch was held up
until a later attempt of the same `llm_call` started here is stale: Temporal no
longer waits for it, and it gives way instead of stopping the later one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

log = logging.getLogger("molecule_runtime.durable.activities")

SUPERSEDED_TYPE = "AttemptSuperseded"
# Bound on waiting for a stopped attempt to end (it stores what it wrote first).
STOP_WAIT = 30.0


@dataclass
class _Running:
    task: asyncio.Task[object]
    activity_id: str
    attempt: int  # within its activity execution, as Temporal numbers it


class RunningAttempts:
    def __init__(self) -> None:
        self._running: dict[str, _Running] = {}

    def later_than(self, task_id: str, activity_id: str, attempt: int) -> bool:
        """A later attempt of the same `llm_call` runs here."""
        running = self._running.get(task_id)
        return (
            running is not None
            and not running.task.done()
            and running.activity_id == activity_id
            and running.attempt > attempt
        )

    async def take_over(self, task_id: str, activity_id: str, attempt: int) -> None:
        """Make the current asyncio task the task's attempt here, stopping an earlier one."""
        current = asyncio.current_task()
        assert current is not None
        if self.later_than(task_id, activity_id, attempt):
            log.info("task %s: attempt %d arrived after a later one started; it gives way", task_id, attempt)
            raise ApplicationError(
                f"Attempt {attempt} reached this process after a later attempt started.",
                type=SUPERSEDED_TYPE,
                category=ApplicationErrorCategory.BENIGN,
            )
        earlier = self._running.get(task_id)
        if earlier is not None and earlier.task is not current and not earlier.task.done():
            log.warning("task %s: a new attempt starts while the last one still runs; stopping it", task_id)
            earlier.task.cancel()
            await asyncio.wait({earlier.task}, timeout=STOP_WAIT)
        self._running[task_id] = _Running(current, activity_id, attempt)

    def leave(self, task_id: str) -> None:
        """The current asyncio task's attempt ended."""
        running = self._running.get(task_id)
        if running is not None and running.task is asyncio.current_task():
            del self._running[task_id]
