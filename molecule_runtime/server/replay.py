"""Streams of a task read from the shared event log (store/event_log.py): a
subscription, resumed after an offset (`Last-Event-ID`, server/sse_ids.py) or
from the task's snapshot, and a repeated send attaching to its first send's
task. It works whichever process runs (or recovers) the task, and after restarts."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing

from a2a.server.cluster import StoredTask
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.types.a2a_pb2 import Message, Role, SubscribeToTaskRequest, Task, TaskState
from a2a.utils.errors import A2AError, TaskNotFoundError, UnsupportedOperationError

from molecule_runtime.sdk_seam import version_number
from molecule_runtime.server.repeats import settled_for
from molecule_runtime.server.sse_ids import requested_offset, set_offset
from molecule_runtime.states import INTERRUPTED_STATES, TERMINAL_STATES, is_interrupted, is_terminal
from molecule_runtime.store import ObservedTaskStore, TaskEventLog

# The SDK's live-only subscription (the in-memory store has no event log).
LiveOnly = Callable[[SubscribeToTaskRequest, ServerCallContext], AsyncIterator[Event]]


class EventReplay:
    def __init__(
        self,
        store: ObservedTaskStore,
        event_log: TaskEventLog | None,
        *,
        answer_taken: Callable[[str], Awaitable[bool]],
        live_only: LiveOnly,
    ) -> None:
        self.store = store
        self.event_log = event_log
        # Whether this process holds an answer for the task not yet stored (sdk_seam.py).
        self.answer_taken = answer_taken
        self.live_only = live_only

    async def waits_unanswered(self, stored: StoredTask) -> bool:
        """The task waits for the client and no answer has been taken yet: its
        question is current, so a subscription ends with it."""
        task = stored.task
        if task.status.state not in INTERRUPTED_STATES:
            return False
        # Storing the answer moves the question from the status into the history.
        stored_answer = (
            not task.status.HasField("message")
            and bool(task.history)
            and task.history[-1].role == Role.ROLE_USER
        )
        return not stored_answer and not await self.answer_taken(task.id)

    async def repeated_stream(
        self, answer: Task | Message, message_id: str, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """The first send's Message; or its task's snapshot, then its events until
        it answered this message (as a subscription follows it)."""
        if isinstance(answer, Message):
            set_offset(context, None)
            yield answer
            return
        stored = await self.store.get(answer.id, context)
        if stored is None:
            raise TaskNotFoundError
        if settled_for(stored.task, message_id):
            set_offset(context, version_number(stored.version) or None)
            yield stored.task
            return
        try:
            async for event in self.task_events(stored, None, context):
                yield event
        except A2AError:
            # It ended between the read and the subscription: the task as it is now.
            latest = await self.store.get(answer.id, context)
            if latest is None or not settled_for(latest.task, message_id):
                raise
            set_offset(context, None)
            yield latest.task

    async def subscribe(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """Without `Last-Event-ID`: the task, then its events as they happen (the
        SDK's contract). With it: the logged events after that offset, then live
        ones, also for a finished task.

        It stays open across questions until the task is terminal (A2A 1.0
        §3.1.6: the stream MUST terminate when the task reaches a terminal
        state); a task nobody answers keeps it open until the client leaves or
        the input timeout ends the task. Without an event log (the in-memory
        store) there is nothing to follow a waiting task by: the snapshot, and
        the stream ends.
        """
        stored = await self.store.get(params.id, context)
        if self.event_log is None and (stored is None or not await self.waits_unanswered(stored)):
            # In-memory store: no event log, the SDK's live-only subscription.
            async for event in self.live_only(params, context):
                set_offset(context, None)
                yield event
            return
        if stored is None:
            raise TaskNotFoundError
        offset = requested_offset(context) if self.event_log is not None else None
        if offset is None and stored.task.status.state in TERMINAL_STATES:
            raise UnsupportedOperationError(
                message=f"Task {params.id} is in terminal state: "
                f"{TaskState.Name(stored.task.status.state)} "
                "(send Last-Event-ID: 0 to replay its events)"
            )
        async for event in self.task_events(stored, offset, context, through_questions=True):
            yield event

    async def task_events(
        self,
        stored: StoredTask,
        offset: int | None,
        context: ServerCallContext,
        *,
        through_questions: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """A task's events to its end or its current question: after `offset` in
        the event log, or (None) its snapshot first and then its events.

        `through_questions` (SubscribeToTask): to its end only. A send's stream
        (a repeat following its first send) ends at the question, as the first
        send's did."""
        task_id = stored.task.id
        log = self.event_log
        if log is None:
            if await self.waits_unanswered(stored):
                set_offset(context, None)
                yield stored.task
                return
            # In-memory store: no event log, the SDK's live-only subscription.
            async for event in self.live_only(SubscribeToTaskRequest(id=task_id), context):
                set_offset(context, None)
                yield event
            return
        current = version_number(stored.version)
        finished = stored.task.status.state in TERMINAL_STATES
        # Followed past its question, a waiting task is read like a running one:
        # its followers share the task's one reader (store/event_log.py).
        waiting = not through_questions and await self.waits_unanswered(stored)
        if offset is None:
            set_offset(context, current or None)
            yield stored.task
            if waiting:
                return
            offset = current
        if finished or waiting:
            # Nothing is written until the task is answered: one read is all there is.
            events = await log.read_after(task_id, offset)
            if not events and (offset < current or waiting):
                # Pruned (MOLECULE_EVENT_RETENTION), or nothing after the offset
                # of a waiting task: the task as it is now.
                set_offset(context, current)
                yield stored.task
            for version, event in events:
                set_offset(context, version)
                yield event
            return
        async with aclosing(log.follow(task_id, offset)) as events:
            async for version, event in events:
                set_offset(context, version)
                yield event
                if isinstance(event, Message) or is_terminal(event):
                    return
                if through_questions:
                    continue
                # A replay passes earlier questions; it ends at the current one.
                if is_interrupted(event) and not await log.read_after(task_id, version):
                    latest = await self.store.get(task_id, context)
                    if latest is None or await self.waits_unanswered(latest):
                        return
