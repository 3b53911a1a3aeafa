"""Start-up sweep of tasks this process left unfinished when it last stopped.

Every task records the instance that accepted it (`molecule.instance`), so a
restarted replica only touches its own tasks, never another live replica's.

* A direct-mode task still working when the process died cannot be resumed:
  it is failed with a message saying so, instead of staying `working` for ever.
* A durable task that was stored but whose workflow never started (the process
  died in between) is started now and runs headless; one whose workflow exists
  is left to Temporal.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime

from a2a.server.cluster import VersionedTaskStore
from a2a.types.a2a_pb2 import ListTasksRequest, Role, Task, TaskState

from molecule_runtime.durable.types import TaskRef
from molecule_runtime.execution.headless import headless_events
from molecule_runtime.states import RUNNING_STATES
from molecule_runtime.store.owners import runtime_context
from molecule_runtime.vocabulary import Meta, Mode

log = logging.getLogger(__name__)


INTERRUPTED_DIRECT = (
    "The server stopped while this task ran in direct mode, so it was not finished. "
    "Send it again (durable mode, TEMPORAL_HOST, finishes such tasks after a restart)."
)


async def _unfinished(store: VersionedTaskStore, before: datetime) -> AsyncIterator[Task]:
    context = runtime_context()  # every principal's tasks
    for state in sorted(RUNNING_STATES):
        token = ""
        while True:
            page = await store.list(
                ListTasksRequest(status=state, page_size=100, page_token=token), context
            )
            for task in page.tasks:
                if task.status.timestamp.ToDatetime() < before:
                    yield task
            token = page.next_page_token
            if not token:
                break


def turn_of_stored(task: Task) -> TaskRef:
    """The stored task's latest turn, by reference: its workflow rebuilds the
    adapter's input from the store exactly as the request path builds it
    (the message, the conversation's history, the request's metadata)."""
    users = [m for m in task.history if m.role == Role.ROLE_USER]
    return TaskRef(task.id, task.context_id, users[-1].message_id if users else "")


async def sweep(
    store: VersionedTaskStore,
    instance_id: str,
    started_at: datetime,
    *,
    start_workflow: object | None = None,
) -> dict[str, int]:
    """Settle this instance's unfinished tasks; return counts of what was done.

    `start_workflow(task_ref) -> bool` (durable mode) starts a task's
    workflow unless it exists; without it durable tasks are left alone.
    """
    counts = {"failed_direct": 0, "started": 0, "left_to_temporal": 0}
    async for task in _unfinished(store, started_at):
        metadata = dict(task.metadata)
        if metadata.get(Meta.INSTANCE) != instance_id:
            continue
        mode = metadata.get(Meta.MODE)
        if mode == Mode.DIRECT:
            events = headless_events(store, task.id, task.context_id)
            await events.status(TaskState.TASK_STATE_FAILED, INTERRUPTED_DIRECT)
            counts["failed_direct"] += 1
            log.warning("task %s: interrupted in direct mode; marked failed", task.id)
        elif callable(start_workflow):
            if await start_workflow(turn_of_stored(task)):
                counts["started"] += 1
                log.warning("task %s: its workflow never started; started it now", task.id)
            else:
                counts["left_to_temporal"] += 1
    return counts
