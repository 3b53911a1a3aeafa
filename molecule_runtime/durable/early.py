"""The first attempt of a new durable task, begun on the request path as soon as
Temporal has accepted its workflow: the first chunk does not wait for the
workflow's first task, `llm_call`'s dispatch and a re-read of the input.

The first attempt of `llm_call` to reach this process takes it over and reports
its end (durable/llm_call.py): one run of the adapter per attempt, as before.
That is attempt 1, or a retry when attempt 1 never arrived (Temporal started it
but its dispatch was lost; it timed out on heartbeats): every attempt of that
`llm_call` comes to this process's queue, so none ran beside it. Until
taken it never writes beside an attempt running elsewhere: it is dropped when
the workflow ends first (a cancel), when this process hands its tasks over,
and before Temporal could move `llm_call` to the shared queue
(schedule-to-start timeout). A busy process is not a reason to drop it: when
the timeout could be near, Temporal is asked where `llm_call` stands
(durable/watch.py): already handed to this process's worker, or scheduled less
than the timeout ago, the attempt goes on. Its chunks are journaled as an
attempt's are (write-ahead), so a dropped or dead early attempt is continued
by the next one like any other.

An early attempt that has ended with an answer while `llm_call`, started by
this process's worker in Temporal's eyes, has not reached it for a while (a
lost dispatch) reports that answer by activity id (durable/watch.py): the
task ends then, not after the heartbeat timeout and a retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from molecule_runtime.durable.watch import LOST_AFTER, MARGIN
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
# Seconds the early attempt may still wait for llm_call, or None: stop it now.
Check = Callable[[], Awaitable[float | None]]
# Seconds until asked again, or None: reported, or nothing to report.
Report = Callable[[AttemptResult], Awaitable[float | None]]


def _retrieve(task: asyncio.Task[AttemptResult]) -> None:
    if not task.cancelled():
        task.exception()


class EarlyAttempt:
    """A running first attempt, until `llm_call` takes it or it is dropped."""

    def __init__(
        self,
        task: asyncio.Task[AttemptResult],
        task_id: str,
        deadline: float,
        *,
        eager: bool = False,
        check: Check | None = None,
        report: Report | None = None,
        report_after: float = LOST_AFTER,
    ) -> None:
        self.task = task
        self.task_id = task_id
        self.deadline = deadline
        self.check = check
        self.report = report
        self.report_after = report_after
        self.taken = False
        self.dropped = False
        self._checking: asyncio.Task[None] | None = None
        self._reporting: asyncio.Task[None] | None = None
        self._report_timer: asyncio.TimerHandle | None = None
        first = deadline + (FIRST_TASK_TIMEOUT if eager else 0.0)
        self._timer = asyncio.get_running_loop().call_later(first, self._expire)
        # Its end is reported by llm_call, or by nobody (dropped): never an
        # "exception was never retrieved" at shutdown.
        task.add_done_callback(self._ended)

    def restart_clock(self) -> None:
        """The workflow's first task ran here: Temporal schedules `llm_call` now."""
        if not self.taken and not self.dropped and self._checking is None:
            self._timer.cancel()
            wait = max(0.0, self.deadline - MARGIN)
            self._timer = asyncio.get_running_loop().call_later(wait, self._expire)

    def _settled(self) -> bool:
        return self.taken or self.dropped or self.task.done()

    def _expire(self) -> None:
        if self._settled():
            return
        if self.check is None:
            self._drop("was not taken by llm_call in time")
            return
        self._checking = asyncio.get_running_loop().create_task(self._recheck())

    async def _recheck(self) -> None:
        assert self.check is not None
        try:
            wait = await self.check()
        except Exception as exc:
            log.info("task %s: where llm_call stands is not known (%s)", self.task_id, exc)
            wait = None
        self._checking = None
        if self._settled():
            return
        if wait is None:
            self._drop("was not taken by llm_call before Temporal could move it")
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self._expire)

    def _ended(self, task: asyncio.Task[AttemptResult]) -> None:
        _retrieve(task)
        if self.report is not None and self.takeable() and self._answered(task):
            # Taken in time as a rule; else its llm_call may have been lost.
            self._ask_later(self.report_after)

    @staticmethod
    def _answered(task: asyncio.Task[AttemptResult]) -> bool:
        return not task.cancelled() and task.exception() is None

    def _ask_later(self, wait: float) -> None:
        self._report_timer = asyncio.get_running_loop().call_later(wait, self._ask)

    def _ask(self) -> None:
        if self.takeable():
            self._reporting = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        assert self.report is not None
        try:
            wait = await self.report(self.task.result())
        except Exception as exc:
            log.info("task %s: where llm_call stands is not known (%s)", self.task_id, exc)
            wait = self.report_after
        self._reporting = None
        if wait is not None and self.takeable():
            self._ask_later(wait)

    def _drop(self, why: str) -> None:
        log.warning("task %s: its first attempt %s; stopped, the next attempt continues it", self.task_id, why)
        self.dropped = True
        self.task.cancel()

    def takeable(self) -> bool:
        return not (self.taken or self.dropped)

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
        self._stop_reporting()
        return self.task

    def _stop_reporting(self) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
        if self._reporting is not None:
            self._reporting.cancel()

    async def stop(self) -> None:
        """Stop it and wait for its end (a later attempt of this task starts here)."""
        self._timer.cancel()
        self._stop_reporting()
        self.dropped = True
        if not self.task.done():
            self.task.cancel()
        await asyncio.wait({self.task})

    async def drop(self) -> None:
        """Unless taken: stop it (the workflow ended without it, or the task is
        handed over or canceled)."""
        if not self.taken:
            await self.stop()
