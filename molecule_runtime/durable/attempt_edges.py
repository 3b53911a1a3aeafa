"""The edges of an `llm_call` attempt: whether it may run at all (the task
already has a final state), the usage earlier attempts left, handing the task
back at shutdown (its events stored first), letting any worker take the
workflow's next task, and how an attempt's end (and a bookkeeping stage's
routine one) reaches Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from a2a.server.cluster import VersionedTaskStore
from a2a.types.a2a_pb2 import Task
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from molecule_runtime.adapters.base import NonRetryableError
from molecule_runtime.durable.types import (
    ABANDONED_TYPE,
    NON_RETRYABLE_TYPE,
    WORKER_SHUTDOWN_TYPE,
    LlmCallResult,
)
from molecule_runtime.execution.attempt import describe_error
from molecule_runtime.execution.events import EventsDropped, TaskEvents
from molecule_runtime.execution.headless import TaskFinishedElsewhere
from molecule_runtime.execution.usage import UsageLedger
from molecule_runtime.states import TERMINAL_STATES, outcome_of
from molecule_runtime.store.observed import ObservedTaskStore
from molecule_runtime.vocabulary import Meta, Outcome, Stage

# Logged under the activities' name, as operators know it.
log = logging.getLogger("molecule_runtime.durable.activities")

# How long an attempt handed back at shutdown waits for its events to be stored.
HANDOVER_STORE_WAIT = 3.0


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


def handed_back(task_id: str, attempt: int, in_call: int, why: str) -> ApplicationError:
    """A deploy cut the attempt short: retried elsewhere, logged once, no traceback
    (a benign failure is logged by Temporal's SDK at DEBUG only). The details
    (the attempt's number, and within its activity execution) let the workflow
    continue the count without counting the hand-back as a failure."""
    log.info("task %s: attempt %d handed back at shutdown; it is retried elsewhere", task_id, attempt)
    return ApplicationError(
        f"{why}; the attempt is retried elsewhere.",
        attempt,
        in_call,
        type=WORKER_SHUTDOWN_TYPE,
        category=ApplicationErrorCategory.BENIGN,
    )


def abandoned_by_temporal() -> bool:
    """Cancelled by Temporal for neither a cancel request nor this worker's
    shutdown: the attempt (or a local activity's workflow task) timed out, and
    Temporal no longer waits for its result; it has been retried already."""
    details = activity.cancellation_details()
    return details is not None and not (
        details.cancel_requested or details.worker_shutdown or details.paused or details.reset
    )


def abandoned(stage: str, task_id: str) -> ApplicationError:
    """What an abandoned activity reports instead of a traceback (nobody reads it)."""
    log.debug("task %s: %s abandoned by Temporal after its timeout", task_id, stage)
    return ApplicationError(
        f"{stage} timed out; Temporal retried it.",
        type=ABANDONED_TYPE,
        category=ApplicationErrorCategory.BENIGN,
    )


async def store_before_handover(store: VersionedTaskStore, task_id: str, events: TaskEvents) -> None:
    """Store what this attempt wrote before Temporal hears it ended, within a bound.

    The next attempt (on another replica) reads the stored answer to
    continue it; a commit of this one landing after that read would be
    continued twice. (That attempt's first write also fences later
    commits of this one off: execution/attempt.py.) Awaited in a task of
    its own: this one is being cancelled, and a timeout in it would turn
    into a CancelledError instead of the hand-back.
    """

    async def stored() -> None:
        with contextlib.suppress(EventsDropped):
            await events.persisted()  # the client's queue handed to the store
        if isinstance(store, ObservedTaskStore):
            await store.wait_stored(task_id)

    storing = asyncio.get_running_loop().create_task(stored())
    done, _ = await asyncio.wait({storing}, timeout=HANDOVER_STORE_WAIT)
    if not done:
        storing.cancel()
        log.warning(
            "task %s: its last events were not stored within %.0f s of the hand-back",
            task_id,
            HANDOVER_STORE_WAIT,
        )
    elif storing.exception() is not None:
        log.warning("task %s: storing its last events failed: %r", task_id, storing.exception())


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


@contextlib.asynccontextmanager
async def attempt_ends(
    store: VersionedTaskStore,
    events: TaskEvents,
    attempt: int,
    in_call: int,
    leaving: Callable[[], bool],
) -> AsyncIterator[None]:
    """How an `llm_call` attempt's end reaches Temporal: an adapter's
    NonRetryableError and a task finished elsewhere end the retries; a shutdown
    (a cancel for it, the client stream or the store closed under it) hands the
    attempt back with its events stored first; a cancel for a timeout reports
    quietly; anything else is a retryable failure, logged once."""
    task_id = events.task_id
    try:
        yield
    except NonRetryableError as exc:
        raise ApplicationError(describe_error(exc), type=NON_RETRYABLE_TYPE, non_retryable=True) from exc
    except TaskFinishedElsewhere as exc:
        raise ApplicationError(str(exc), type=NON_RETRYABLE_TYPE, non_retryable=True) from exc
    except asyncio.CancelledError:
        if activity.is_worker_shutdown():
            # Hand the attempt back: a cancel would end the task canceled.
            await store_before_handover(store, task_id, events)
            raise handed_back(task_id, attempt, in_call, "This process shut down during the attempt") from None
        if abandoned_by_temporal():
            raise abandoned(Stage.LLM_CALL, task_id) from None
        raise
    except ApplicationError:
        raise
    except Exception as exc:
        if not (isinstance(exc, EventsDropped) or leaving()):
            log.warning("task %s: attempt %d failed: %s", task_id, attempt, describe_error(exc))
            raise ApplicationError(describe_error(exc), type=type(exc).__name__) from exc
        # The client stream was closed, or the store, at shutdown: a routine hand-over.
        await store_before_handover(store, task_id, events)
        raise handed_back(task_id, attempt, in_call, f"This process is shutting down ({exc})") from None


@contextlib.contextmanager
def bookkeeping_ends(stage: Stage, task_id: str, leaving: Callable[[], bool]) -> Iterator[None]:
    """task_receive / task_complete end routinely, retried without a traceback,
    when Temporal stopped waiting for them or this process is leaving."""
    try:
        yield
    except asyncio.CancelledError:
        if abandoned_by_temporal():
            raise abandoned(stage, task_id) from None
        raise
    except ApplicationError:
        raise
    except Exception as exc:
        if not (isinstance(exc, EventsDropped) or leaving()):
            raise
        # Retried (here or, once this process is gone, where its workflow
        # task runs next); the error says why.
        raise ApplicationError(
            f"{stage}: this process is shutting down ({describe_error(exc)})",
            type=WORKER_SHUTDOWN_TYPE,
            category=ApplicationErrorCategory.BENIGN,
        ) from None
