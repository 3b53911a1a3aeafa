"""The edges of an `llm_call` attempt: whether it may run at all (the task
already has a final state), the usage earlier attempts left, handing the task
back at shutdown, and letting any worker take the workflow's next task."""

from __future__ import annotations

import contextlib
import logging

from a2a.types.a2a_pb2 import Task
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from molecule_runtime.adapters.base import TaskInput
from molecule_runtime.durable.types import WORKER_SHUTDOWN_TYPE, LlmCallResult
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.execution.usage import UsageLedger
from molecule_runtime.states import TERMINAL_STATES, outcome_of
from molecule_runtime.vocabulary import Meta, Outcome

# Logged under the activities' name, as operators know it.
log = logging.getLogger("molecule_runtime.durable.activities")


async def release_sticky_queue(info: activity.Info) -> None:
    """Let the workflow's next task go to any worker now, not after the sticky timeout.

    A headless attempt usually means the worker that had the workflow cached
    is gone; its sticky queue would hold the next workflow task until it times out.
    """
    with contextlib.suppress(Exception):
        await activity.client().workflow_service.reset_sticky_task_queue(
            ResetStickyTaskQueueRequest(
                namespace=info.workflow_namespace,
                execution=WorkflowExecution(
                    workflow_id=info.workflow_id, run_id=info.workflow_run_id or ""
                ),
            )
        )


def add_stored_usage(current: Task | None, events: TaskEvents) -> None:
    """Earlier attempts' usage, maybe run by another process, so this one adds to it."""
    try:
        events.usage.merge(UsageLedger.from_task(current))
    except Exception as exc:  # accounting must never fail an attempt
        log.warning("task %s: could not read its usage so far: %s", events.task_id, exc)


def handed_back(task: TaskInput, why: str) -> ApplicationError:
    """A deploy cut the attempt short: retried elsewhere, logged once, no traceback
    (a benign failure is logged by Temporal's SDK at DEBUG only)."""
    log.info("task %s: attempt %d handed back at shutdown; it is retried elsewhere", task.task_id, task.attempt)
    return ApplicationError(
        f"{why}; the attempt is retried elsewhere.",
        type=WORKER_SHUTDOWN_TYPE,
        category=ApplicationErrorCategory.BENIGN,
    )


def final_result(current: Task | None) -> LlmCallResult | None:
    """The result of an attempt that must not run: the task already has a final
    state (stored by an earlier attempt of an older version, a cancel, ...).
    A failure the server wrote when it lost Temporal does not count: the
    workflow's real outcome replaces it."""
    if current is None or current.status.state not in TERMINAL_STATES:
        return None
    if dict(current.metadata).get(Meta.LOST_CONTACT):
        return None
    message = current.status.message if current.status.HasField("message") else None
    text = "".join(p.text for p in message.parts if p.text) if message is not None else ""
    return LlmCallResult(0, ended=outcome_of(current.status.state) or Outcome.FAILED, message=text)
