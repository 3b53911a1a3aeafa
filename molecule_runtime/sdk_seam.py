"""Every use of an a2a-sdk private attribute or undocumented behaviour, in one place.

The SDK (1.3) has no public seam for these; tests/test_sdk_seam*.py pin each
behaviour relied on here, so an SDK upgrade that changes one fails there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from a2a.server.agent_execution.active_task import EventConsumer
from a2a.server.cluster import DatabaseTaskEventStream, TaskVersion
from a2a.server.cluster.database_event_stream import stream_response_to_event
from a2a.server.cluster.task_store import ConcurrentTaskModificationError
from a2a.server.events import EventQueue
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import StreamResponse, Task
from sqlalchemy import and_, select

# The SDK warns (log and warning) when a versioned store comes without an event
# stream, i.e. for every in-memory store, which serves one process by design.
_SINGLE_PROCESS_NOTE = "without an event_stream"
_HANDLER_LOG = logging.getLogger("a2a.server.request_handlers.default_request_handler_v2")


def version_number(version: TaskVersion) -> int:
    """A database store's version as an integer; 0 for MISSING (the in-memory store)."""
    value = version._value  # no accessor: the SDK keeps versions opaque
    return value if isinstance(value, int) else 0


def memory_tasks(store: InMemoryTaskStore) -> dict[str, dict[str, Task]]:
    """The in-memory store's tasks by owner, then id (the store lists one owner at a time)."""
    return store._impl.tasks


async def logged_events_after(
    stream: DatabaseTaskEventStream, task_id: str, after: int
) -> list[tuple[int, bytes]]:
    """The rows of the SDK's event log for `task_id` with a task version above
    `after`, in write order: (version, serialized `StreamResponse`).

    The SDK's stream only subscribes from a version on and never ends; the log
    is read here through its table model and sessions, which have no accessor.
    """
    await stream._ensure_initialized()
    model = stream._event_model
    async with stream._session_maker() as session:
        rows = (
            await session.execute(
                select(model.task_version, model.event_data)
                .where(and_(model.task_id == task_id, model.task_version > after))
                .order_by(model.seq.asc())
            )
        ).all()
    return [(int(version), data) for version, data in rows]


def logged_event(data: bytes) -> Event:
    """An event of the log, from its serialized `StreamResponse` (the SDK's own decoding)."""
    response = StreamResponse()
    response.ParseFromString(data)
    return stream_response_to_event(response)


async def events_taken(event_queue: EventQueue) -> None:
    """Wait until the SDK's consumer has handed every event enqueued so far to the store.

    The executor's queue (`EventQueueSource`) moves events from its private
    incoming queue to the sink its consumer reads; the consumer marks each one
    done once the store has taken it. No time limit: under load the store is
    slow, not broken (a durable stage keeps heartbeating meanwhile); the queues'
    state is re-checked each second because the SDK may tear them down.
    """
    for name in ("_incoming_queue", "queue"):
        queue = getattr(event_queue, name, None)
        while queue is not None and not event_queue.is_closed():
            try:
                async with asyncio.timeout(1.0):
                    await queue.join()
                break
            except TimeoutError:
                continue


@contextlib.contextmanager
def single_process_note_silenced() -> Iterator[None]:
    """Around `DefaultRequestHandler(...)` built with an in-memory versioned store."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return _SINGLE_PROCESS_NOTE not in record.getMessage()

    drop = _Drop()
    _HANDLER_LOG.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f".*{_SINGLE_PROCESS_NOTE}")
            yield
    finally:
        _HANDLER_LOG.removeFilter(drop)


async def runs_here(handler: DefaultRequestHandler, task_id: str) -> bool:
    """True when this process holds the task's live producer (its stream and executor)."""
    return await handler._active_task_registry.get(task_id) is not None


# The SDK's consumer, handed a `Task` for a task it already has, passes it to the
# stream's subscribers without storing it, and logs that at ERROR level.
_REPLACEMENT_NOTE = "already exists. Ignoring task replacement"
_ACTIVE_TASK_LOG = logging.getLogger("a2a.server.agent_execution.active_task")


class _RelayNoteFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.expected: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if _REPLACEMENT_NOTE not in record.getMessage():
            return True
        task_id = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        left = self.expected.get(task_id, 0)
        if not left:
            return True
        if left == 1:
            del self.expected[task_id]
        else:
            self.expected[task_id] = left - 1
        return False


_relay_notes = _RelayNoteFilter()
_ACTIVE_TASK_LOG.addFilter(_relay_notes)


# The SDK's consumer reloads a task once when another writer advanced it and
# fails the client's stream on a second conflict. Under a burst, a replica whose
# `llm_call` moved to its peer still writes the end of the client's stream while
# the peer's writes land; a busy loop makes a second conflict likely. So the
# reload is tried until the write lands (or the reloaded task is finished, which
# the SDK's own handling ends the stream with), with a short pause between.
CONFLICT_RETRIES = 20
_sdk_process_event = EventConsumer._process_event


async def _process_event_until_landed(self: EventConsumer, event: Event) -> None:
    for attempt in range(CONFLICT_RETRIES):
        try:
            return await _sdk_process_event(self, event)
        except ConcurrentTaskModificationError:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            await asyncio.sleep(min(0.02 * 2**attempt, 0.5))


EventConsumer._process_event = _process_event_until_landed  # type: ignore[method-assign]


def expect_snapshot_relay(task_id: str) -> None:
    """Before a stored `Task` is enqueued on the live queue of an existing task, to be
    streamed as it is (another process stored it): its note is not an error here."""
    _relay_notes.expected[task_id] = _relay_notes.expected.get(task_id, 0) + 1


async def answer_taken(handler: DefaultRequestHandler, task_id: str) -> bool:
    """True while this process holds a message for the task that its executor has
    not finished with: an answer to a question, taken before anything is stored."""
    active = await handler._active_task_registry.get(task_id)
    if active is None or active.is_finished:
        return False
    return active._request_lock.locked() or not active._request_queue.empty()


# Closing a task's event queue after its dispatcher stopped (the SDK tears its
# queues down at shutdown) logs a WARNING per queue; nothing is lost by then.
_DISPATCHER_NOTE = "Dispatcher task is not running"
# Also while this process hands its tasks over at shutdown: an event still put on
# a closed queue is one of an attempt being handed back, which the runtime sees
# (EventsDropped) and the next attempt redoes from the store.
_TEARDOWN_NOTES = (
    "Dispatcher task was cancelled or finished",
    "Queue was closed during enqueuing",
)
_QUEUE_LOG = logging.getLogger("a2a.server.events.event_queue_v2")


class _DispatcherNoteFilter(logging.Filter):
    shutting_down = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        teardown = self.shutting_down and message.startswith(_TEARDOWN_NOTES)
        if not teardown and _DISPATCHER_NOTE not in message:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return _QUEUE_LOG.isEnabledFor(logging.DEBUG)


_QUEUE_NOTES = _DispatcherNoteFilter()


def queues_torn_down() -> None:
    """From now on (shutdown) the SDK's notes about closed task queues are routine."""
    _QUEUE_NOTES.shutting_down = True


_QUEUE_LOG.addFilter(_QUEUE_NOTES)


def heartbeat_sender(worker: Any) -> Callable[[bytes], None]:
    """Records an activity heartbeat straight in a temporalio worker's core, from
    any thread (the SDK's own `activity.heartbeat()` goes through the event loop).
    Relies on `Worker._activity_worker._bridge_worker()` and the core's
    `ActivityHeartbeat` proto, pinned by tests/test_pulse.py."""
    from temporalio.bridge.proto import ActivityHeartbeat

    def send(token: bytes) -> None:
        activities = worker._activity_worker
        if activities is not None:
            activities._bridge_worker().record_activity_heartbeat(ActivityHeartbeat(task_token=token))

    return send


def started_eagerly(handle: Any) -> bool:
    """Whether Temporal handed the workflow's first task to this process with the
    start (eager start granted). temporalio records it on the handle, privately."""
    return bool(getattr(handle, "__temporal_eagerly_started", False))
