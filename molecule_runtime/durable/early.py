"""The first attempt of a new durable task, begun on the request path as soon as
Temporal has accepted its workflow: the first chunk does not wait for the
workflow's first task, `llm_call`'s dispatch and a re-read of the input.

`llm_call`'s first attempt on this process takes it over and reports its end
(durable/activities.py): one run of the adapter per attempt, as before. Until
taken it is bounded, so that it never writes beside an attempt running
elsewhere: it is dropped when the workflow ends first (a cancel), when this
process hands its tasks over, and before Temporal could move the attempt to the
shared queue (schedule-to-start timeout, counted from the workflow's first task
here; before that from the start, plus the first task's own timeout when Temporal
handed that task to this process with the start). Its chunks are journaled
as an attempt's are (write-ahead), so a dropped or dead early attempt is
continued by the next one like any other.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from molecule_runtime.execution.attempt import AttemptResult

log = logging.getLogger("molecule_runtime.durable.activities")

DROPPED_TYPE = "EarlyAttemptDropped"
# Below this TEMPORAL_SCHEDULE_TO_START_TIMEOUT (seconds) no attempt begins
# early: llm_call would move to the shared queue at the slightest delay, and
# the early attempt would mostly be thrown away.
MIN_WINDOW = 2.0
# Temporal's default workflow task timeout (starts.py sets none): an eagerly
# started workflow's first task runs here, and only once it has completed (or
# timed out, to be retried elsewhere) can llm_call be scheduled.
FIRST_TASK_TIMEOUT = 10.0


def _retrieve(task: asyncio.Task[AttemptResult]) -> None:
    if not task.cancelled():
        task.exception()


class EarlyAttempt:
    """A running first attempt, until `llm_call` takes it or it is dropped."""

    def __init__(
        self, task: asyncio.Task[AttemptResult], task_id: str, deadline: float, *, eager: bool = False
    ) -> None:
        self.task = task
        self.task_id = task_id
        self.deadline = deadline
        self.taken = False
        self.dropped = False
        first = deadline + (FIRST_TASK_TIMEOUT if eager else 0.0)
        self._timer = asyncio.get_running_loop().call_later(first, self._expire)
        # Its end is reported by llm_call, or by nobody (dropped): never an
        # "exception was never retrieved" at shutdown.
        task.add_done_callback(_retrieve)

    def restart_clock(self) -> None:
        """The workflow's first task ran here: Temporal schedules `llm_call` now."""
        if not self.taken and not self.dropped:
            self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(self.deadline, self._expire)

    def _expire(self) -> None:
        if self.taken or self.dropped or self.task.done():
            return
        log.warning(
            "task %s: its first attempt was not taken by llm_call within %.0f s; "
            "stopped, the next attempt continues it",
            self.task_id,
            self.deadline,
        )
        self.dropped = True
        self.task.cancel()

    def take(self) -> asyncio.Task[AttemptResult]:
        """The attempt for `llm_call` to report; a dropped one is retried by Temporal."""
        self._timer.cancel()
        if self.dropped or self.taken:
            # Retried, and logged once (above), without a traceback.
            raise ApplicationError(
                "The first attempt was stopped before Temporal handed it over; retrying.",
                type=DROPPED_TYPE,
                category=ApplicationErrorCategory.BENIGN,
            )
        self.taken = True
        return self.task

    async def stop(self) -> None:
        """Stop it and wait for its end (a later attempt of this task starts here)."""
        self._timer.cancel()
        self.dropped = True
        if not self.task.done():
            self.task.cancel()
        await asyncio.wait({self.task})

    async def drop(self) -> None:
        """Unless taken: stop it (the workflow ended without it, or the task is
        handed over or canceled)."""
        if not self.taken:
            await self.stop()
