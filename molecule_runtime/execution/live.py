"""Live delivery: the events of a task run for a request of this process go to
the SDK's event queue of that request, whose consumer stores and streams them."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from a2a.server.agent_execution import RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.events.event_queue import Event
from a2a.types.a2a_pb2 import TaskState

from molecule_runtime.execution.events import EventsDropped, TaskEvents, artifact_id_for
from molecule_runtime.execution.headless import TaskFinishedElsewhere
from molecule_runtime.execution.inputs import turn_of
from molecule_runtime.execution.usage import UsageLedger
from molecule_runtime.sdk_seam import events_taken
from molecule_runtime.states import TERMINAL_STATES
from molecule_runtime.store import ObservedTaskStore


def live_delivery(
    event_queue: EventQueue, store: ObservedTaskStore, task_id: str, context: ServerCallContext
) -> Callable[[Event], Awaitable[None]]:
    """Events to the SDK's queue, which stores and streams them; refused once the
    queue is closed (the SDK would drop them silently): because the task was
    finished elsewhere (e.g. canceled on another replica), or at shutdown."""

    async def deliver(event: Event) -> None:
        if event_queue.is_closed():
            stored = await store.get(task_id, context)
            if stored is not None and stored.task.status.state in TERMINAL_STATES:
                state = TaskState.Name(stored.task.status.state)
                raise TaskFinishedElsewhere(f"task {task_id} is already {state}")
            raise EventsDropped("the task's event stream is closed")
        await event_queue.enqueue_event(event)

    return deliver


async def events_stored(
    event_queue: EventQueue, store: ObservedTaskStore, task_id: str, context: ServerCallContext
) -> None:
    """Wait until every event enqueued so far is in the database.

    A durable stage must not report itself done to Temporal before its events
    are stored, or a crash in between would lose them for good.
    """
    await events_taken(event_queue)
    await store.wait_stored(task_id)
    if event_queue.is_closed():
        # Closed at a terminal state (then everything was stored first), or torn
        # down at shutdown, when events still queued were dropped.
        stored = await store.get(task_id, context)
        if stored is None or stored.task.status.state not in TERMINAL_STATES:
            raise EventsDropped("the task's event stream closed before its events were stored")


async def stored_artifacts(
    store: ObservedTaskStore, task_id: str, context: ServerCallContext
) -> dict[str, str]:
    """The stored task's artifacts (id: name): a retry replaces its turn's."""
    stored = await store.get(task_id, context)
    if stored is None:
        return {}
    return {a.artifact_id: a.name for a in stored.task.artifacts}


def live_events(
    context: RequestContext, event_queue: EventQueue, store: ObservedTaskStore, max_file_bytes: int
) -> TaskEvents:
    """The events of the request's task (this turn's), delivered live."""
    task_id = str(context.task_id)
    current = context.current_task
    turn = turn_of(current, context.message.message_id if context.message else "")
    events = TaskEvents(
        task_id,
        str(context.context_id),
        live_delivery(event_queue, store, task_id, context.call_context),
        artifact_id=artifact_id_for(task_id, turn),
        persisted=functools.partial(events_stored, event_queue, store, task_id, context.call_context),
        settled=functools.partial(events_taken, event_queue),
    )
    # A later turn adds to the usage of the earlier ones.
    events.usage = UsageLedger.from_task(current)
    events.max_file_bytes = max_file_bytes
    events.steps = store.steps
    events.stored_artifacts = functools.partial(
        stored_artifacts, store, task_id, context.call_context
    )
    return events
