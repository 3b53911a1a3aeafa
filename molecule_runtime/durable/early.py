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
(`LlmCallWatch`): already handed to this process's worker, or scheduled less
than the timeout ago, the attempt goes on. Its chunks are journaled as an
attempt's are (write-ahead), so a dropped or dead early attempt is continued
by the next one like any other.

An early attempt that has ended with an answer while `llm_call`, started by
this process's worker in Temporal's eyes, has not reached it for a while (a
lost dispatch) reports that answer by activity id (`LlmCallWatch.report`): the
task ends then, not after the heartbeat timeout and a retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from molecule_runtime.durable.types import LlmCallResult
from molecule_runtime.execution.attempt import AttemptResult
from molecule_runtime.vocabulary import Stage

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
# While llm_call is not scheduled yet, Temporal is asked again this often.
RECHECK = 1.0
# Stopped this long before Temporal could move llm_call (the clocks of this
# host and Temporal's may differ a little).
MARGIN = 1.0

# An ended early attempt reports its answer by id once llm_call was started
# on this process's worker this long ago (at most half the heartbeat timeout)
# without reaching it. Dispatch delays at a burst of 500 stay under 2.5 s.
LOST_AFTER = 5.0

# Seconds the early attempt may still wait for llm_call, or None: stop it now.
Check = Callable[[], Awaitable[float | None]]
# Seconds until asked again, or None: reported, or nothing to report.
Report = Callable[[AttemptResult], Awaitable[float | None]]


class LlmCallWatch:
    """Where the task's `llm_call` stands in Temporal, for an early attempt not taken yet."""

    def __init__(
        self,
        handle: Any,
        process_queue: str,
        identity: str,
        schedule_to_start: float,
        *,
        client: Client | None = None,
        heartbeat_timeout: float = 30.0,
    ) -> None:
        self.handle = handle
        self.process_queue = process_queue
        self.identity = identity
        self.schedule_to_start = schedule_to_start
        self.client = client  # None: an ended early attempt waits for llm_call
        self.lost_after = min(LOST_AFTER, heartbeat_timeout / 2)
        self.activity_id: str | None = None  # the first llm_call seen: the one on this process's queue

    async def _call(self) -> tuple[str, PendingActivityInfo | None]:
        """("unknown" | "ended" | "not scheduled" | "moved" | "here", the call)."""
        try:
            described = await self.handle.describe(rpc_timeout=timedelta(seconds=5))
        except Exception as exc:
            log.info("task workflow %s: where llm_call stands is not known (%s)", self.handle.id, exc)
            return "unknown", None
        if described.status not in (None, WorkflowExecutionStatus.RUNNING):
            return "ended", None
        calls = [
            p for p in described.raw_description.pending_activities if p.activity_type.name == Stage.LLM_CALL
        ]
        if not calls:
            # Not scheduled yet (the workflow's first task is still on its way);
            # gone once seen: it ran, failed or moved.
            return ("not scheduled" if self.activity_id is None else "moved"), None
        call = calls[0]
        if self.activity_id is None:
            self.activity_id = call.activity_id
        queue = call.activity_options.task_queue.name if call.HasField("activity_options") else ""
        if call.activity_id != self.activity_id or queue not in ("", self.process_queue):
            return "moved", None
        return "here", call

    async def __call__(self) -> float | None:
        where, call = await self._call()
        if call is None:
            return RECHECK if where == "not scheduled" else None
        if call.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            # Handed to a worker: this process's (on its way to take the
            # attempt over, however busy the event loop; or lost, and its
            # retry comes here too) or not.
            return self.schedule_to_start if call.last_worker_identity == self.identity else None
        if call.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
            return None
        scheduled = call.scheduled_time.ToDatetime(tzinfo=UTC).timestamp()
        left = scheduled + self.schedule_to_start - MARGIN - time.time()
        return left if left > 0 else None

    async def report(self, result: AttemptResult) -> float | None:
        """Complete `llm_call` with the ended early attempt's answer if Temporal
        started it on this process's worker `lost_after` ago or more; it never
        reached this process, or it would have taken the early attempt."""
        if self.client is None:
            return None
        where, call = await self._call()
        if call is None:
            return self.lost_after if where in ("unknown", "not scheduled") else None
        if call.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            return self.lost_after  # on its way here (a retry, or still in the queue)
        if call.last_worker_identity != self.identity:
            return None
        started = call.last_started_time.ToDatetime(tzinfo=UTC).timestamp()
        waited = time.time() - started
        if waited < self.lost_after:
            return self.lost_after - waited
        log.warning(
            "task workflow %s: llm_call attempt %d was started %.1f s ago and never reached this "
            "process; the first attempt's answer is reported by activity id",
            self.handle.id,
            call.attempt,
            waited,
        )
        activity = self.client.get_async_activity_handle(
            workflow_id=self.handle.id, run_id=self.handle.result_run_id, activity_id=call.activity_id
        )
        try:
            await activity.complete(LlmCallResult.of(result), rpc_timeout=timedelta(seconds=5))
        except Exception as exc:
            # It arrived, or timed out and its retry comes here: that takes the answer over.
            log.info("task workflow %s: llm_call not completed by id (%s)", self.handle.id, exc)
            return self.lost_after
        return None


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
