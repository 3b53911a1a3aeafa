"""Where a task's `llm_call` stands in Temporal, for the early attempt not taken
yet (durable/early.py): whether it may keep waiting for `llm_call`, and
reporting its answer by activity id when `llm_call`'s dispatch was lost."""

from __future__ import annotations

import logging
import time
from datetime import UTC, timedelta
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client, WorkflowExecutionStatus

from molecule_runtime.durable.types import LlmCallResult
from molecule_runtime.execution.attempt import AttemptResult
from molecule_runtime.vocabulary import Stage

log = logging.getLogger("molecule_runtime.durable.activities")

# While llm_call is not scheduled yet, Temporal is asked again this often.
RECHECK = 1.0
# Stopped this long before Temporal could move llm_call (the clocks of this
# host and Temporal's may differ a little).
MARGIN = 1.0
# An ended early attempt reports its answer by id once llm_call was started
# on this process's worker this long ago (at most half the heartbeat timeout)
# without reaching it. Dispatch delays at a burst of 500 stay under 2.5 s.
LOST_AFTER = 5.0


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
