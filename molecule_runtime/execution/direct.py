"""Direct mode: run the adapter in this process, in the request's own asyncio task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from a2a.types.a2a_pb2 import TaskState

from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.execution.attempt import describe_error, run_attempt
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.observability.spans import stage_span
from molecule_runtime.states import outcome_of
from molecule_runtime.vocabulary import Meta, Mode, Outcome, Stage

log = logging.getLogger(__name__)

async def run_direct(
    adapter: BaseAdapter,
    task: TaskInput,
    events: TaskEvents,
    attributes: dict[str, str],
    *,
    announce: bool = True,
    batch_window: float = 0.0,
    shutting_down: Callable[[], bool] = lambda: False,
) -> None:
    """One attempt; the task always ends in a terminal state (or re-raises cancellation).

    `announce=False` when the Task was created already working in direct mode.
    """
    common = {**attributes, "mode": Mode.DIRECT}
    with stage_span(Stage.TASK_RECEIVE, task, common):
        if announce:
            # Recorded on the task so a workflow for it (had one been accepted
            # unseen) will not run it a second time.
            await events.status(TaskState.TASK_STATE_WORKING, metadata={Meta.MODE: Mode.DIRECT})
    try:
        with stage_span(Stage.LLM_CALL, task, common):
            # Direct turns are never retried: nothing is journaled before this attempt.
            result = await run_attempt(adapter, task, events, batch_window=batch_window, fresh=True)
    except asyncio.CancelledError:
        if shutting_down():
            raise  # not the user's cancel: the caller records why the task stopped
        with stage_span(Stage.TASK_COMPLETE, task, {**common, "outcome": Outcome.CANCELED}):
            await events.status(TaskState.TASK_STATE_CANCELED, "Canceled.")
        raise
    except Exception as exc:
        log.warning("task %s failed: %s", task.task_id, describe_error(exc))
        with stage_span(Stage.TASK_COMPLETE, task, {**common, "outcome": Outcome.FAILED}):
            await events.status(TaskState.TASK_STATE_FAILED, describe_error(exc))
        return
    if result.ended is not None:
        # The adapter ended the task itself (Done, Reject).
        outcome = outcome_of(result.ended) or Outcome.COMPLETED
        with stage_span(Stage.TASK_COMPLETE, task, {**common, "outcome": outcome}):
            await events.status(result.ended, result.message or None)
        return
    if result.question is not None:
        with stage_span(Stage.TASK_COMPLETE, task, {**common, "outcome": Outcome.INPUT_REQUIRED}):
            await events.status(TaskState.TASK_STATE_INPUT_REQUIRED, result.question)
        return
    with stage_span(Stage.TASK_COMPLETE, task, {**common, "outcome": Outcome.COMPLETED}):
        await events.status(TaskState.TASK_STATE_COMPLETED)
