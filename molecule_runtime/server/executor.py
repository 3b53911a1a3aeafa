"""The runtime's A2A `AgentExecutor`: validates a request and runs it directly or durably."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TYPE_CHECKING

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.events.event_queue import Event
from a2a.types.a2a_pb2 import TaskState

from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.durable.types import TaskRef
from molecule_runtime.execution.admission import claim
from molecule_runtime.execution.direct import run_direct
from molecule_runtime.execution.events import (
    DEFAULT_MAX_FILE_BYTES,
    EventsDropped,
    TaskEvents,
    artifact_id_for,
)
from molecule_runtime.execution.headless import TaskFinishedElsewhere, headless_events
from molecule_runtime.execution.inputs import (
    DEFAULT_HISTORY_BYTES,
    conversation_history,
    request_metadata_record,
    request_task_input,
    turn_of,
)
from molecule_runtime.execution.message_reply import collect_reply, reply_message
from molecule_runtime.execution.parts import has_usable_part
from molecule_runtime.execution.usage import UsageLedger
from molecule_runtime.observability import metrics
from molecule_runtime.observability.logs import current_task_id
from molecule_runtime.sdk_seam import events_taken
from molecule_runtime.server.submission import MESSAGE_CLAIM, REPLIES_WITH_MESSAGE
from molecule_runtime.states import TERMINAL_STATES, outcome_of
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.health import until_stored
from molecule_runtime.store.message_ids import MessageClaim, MessageIds
from molecule_runtime.vocabulary import CONTINUES_CONTEXT, Meta, Mode, Outcome

if TYPE_CHECKING:
    from molecule_runtime.durable.client import DurableTasks

log = logging.getLogger(__name__)


class _Route(Enum):
    DIRECT = "direct"
    DURABLE = "durable"
    RESUME = "resume"  # a durable task's next turn: its workflow waits for the answer

CANCELED_WAITING = "Canceled while it waited for a free slot; it never ran."

REJECT_NO_INPUT = (
    "The message has nothing to act on: no non-empty text, no file and no data part. "
    "Send a message with at least one of them."
)


SHUT_DOWN = (
    "The server shut down before this task finished (direct mode cannot resume it). "
    "Send it again (durable mode, TEMPORAL_HOST, hands such tasks over instead)."
)


def stop_direct_after(streams_close_after: float) -> float:
    """Seconds after SIGTERM when direct tasks still running are ended (FAILED,
    SHUT_DOWN): before the open streams are closed (`streams_close_after`), so
    that every stream still carries the task's final state."""
    return max(0.0, streams_close_after - min(1.0, streams_close_after / 2))


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


def _message_id(context: RequestContext) -> str:
    return context.message.message_id if context.message is not None else ""


class RuntimeExecutor(AgentExecutor):
    def __init__(
        self,
        adapter: BaseAdapter,
        store: ObservedTaskStore,
        durable: DurableTasks | None = None,
        *,
        workspace_id: str = "",
        batch_window: float = 0.0,
        instance_id: str = "",
        draining: asyncio.Event | None = None,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        message_ids: MessageIds | None = None,
        stop_direct_after: float | None = None,
    ) -> None:
        self.message_ids = message_ids
        # Direct runs of this process, ended `stop_direct_after` seconds into a drain.
        self.stop_direct_after = stop_direct_after
        self._direct_runs: set[asyncio.Task[object]] = set()
        self._stopped_runs: set[asyncio.Task[object]] = set()
        self._drain_watch: asyncio.Task[None] | None = None
        self._direct_runs_ended = False
        self.max_file_bytes = max_file_bytes
        self.history_bytes = history_bytes
        self.draining = draining or asyncio.Event()
        self.batch_window = batch_window
        self.instance_id = instance_id
        self.adapter = adapter
        self.store = store
        self.durable = durable
        self.span_attributes = {"workspace_id": workspace_id, "adapter": adapter.name()}

    async def _history(self, context: RequestContext) -> list[tuple[str, str]]:
        """Earlier tasks of the same conversation (A2A context), within the byte budget."""
        read = functools.partial(
            conversation_history,
            self.store,
            str(context.context_id),
            str(context.task_id),
            context.call_context,
            self.history_bytes,
        )
        try:
            # A store that is away for now is waited for, not read as "no history".
            return await until_stored(read, self.store.health)
        except Exception:
            log.exception("could not read the history of context %s", context.context_id)
            return []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id = str(context.task_id)
        current_task_id.set(task_id)
        current = context.current_task
        if current is not None and current.status.state in TERMINAL_STATES:
            return
        turn = turn_of(current, context.message.message_id if context.message else "")
        events = TaskEvents(
            task_id,
            str(context.context_id),
            live_delivery(event_queue, self.store, task_id, context.call_context),
            artifact_id=artifact_id_for(task_id, turn),
            persisted=functools.partial(
                events_stored, event_queue, self.store, task_id, context.call_context
            ),
            settled=functools.partial(events_taken, event_queue),
        )
        # A later turn adds to the usage of the earlier ones.
        events.usage = UsageLedger.from_task(current)
        events.max_file_bytes = self.max_file_bytes
        events.steps = self.store.steps
        events.stored_artifacts = functools.partial(
            stored_artifacts, self.store, task_id, context.call_context
        )
        has_input = has_usable_part(context.message)
        replies = context.call_context.state.get(
            REPLIES_WITH_MESSAGE, self.adapter.replies_with_message
        )
        if current is None and has_input and replies:
            await self._reply(context, events, event_queue)
            return
        if current is not None:
            # A later turn (the user answers a question) continues in the
            # mode the task started in: a durable task's workflow is waiting.
            durable = dict(current.metadata).get(Meta.MODE) == Mode.DURABLE
            route = _Route.RESUME if durable else _Route.DIRECT
            if not has_input:
                await events.status(TaskState.TASK_STATE_INPUT_REQUIRED, REJECT_NO_INPUT)
                return
        elif self.durable is not None and self.durable.accepting():
            route = _Route.DURABLE
        else:
            route = _Route.DIRECT
        # Admission control (execution/admission.py): the request handler
        # admitted this message; it runs once it holds a running slot, which
        # it keeps until this run ends (not while the task waits for input).
        ticket = claim(context.call_context) if has_input else None
        try:
            started_working = False
            if current is None:
                # The SDK requires the Task before any status update. A direct
                # task that can start at once starts out working: one event (and
                # store write) fewer. One that must wait is submitted until then.
                started_working = (
                    has_input and route is _Route.DIRECT and (ticket is None or ticket.try_start())
                )
                metadata = {Meta.INSTANCE: self.instance_id}
                if has_input and route is _Route.DIRECT:
                    # Also while it waits: if the process dies, the start-up sweep fails it.
                    metadata[Meta.MODE] = Mode.DIRECT
                elif context.metadata:
                    # Durable stages rebuild the input from the store, this included.
                    metadata.update(request_metadata_record(_message_id(context), context.metadata))
                await events.created(
                    context.message,
                    TaskState.TASK_STATE_WORKING if started_working else TaskState.TASK_STATE_SUBMITTED,
                    metadata,
                )
            if not has_input:
                await events.status(TaskState.TASK_STATE_REJECTED, REJECT_NO_INPUT)
                return
            if self.durable is not None and route is _Route.DIRECT and current is None:
                metrics.FALLBACKS.inc()
            started = time.monotonic()
            label = Mode.DIRECT if route is _Route.DIRECT else Mode.DURABLE
            mode_used = label
            in_flight = False
            try:
                if ticket is not None and not ticket.try_start():
                    # Before anything runs: in durable mode before the workflow
                    # starts, so none of its timeouts tick while it waits. A
                    # later turn keeps its input-required state meanwhile.
                    try:
                        await ticket.start()
                    except asyncio.CancelledError:
                        await events.status(TaskState.TASK_STATE_CANCELED, CANCELED_WAITING)
                        raise
                    if route is _Route.DURABLE and self.durable is not None and self.durable.handover.is_set():
                        # The slot came free because this process hands its work
                        # over at shutdown: the task stays submitted, and this
                        # instance's start-up sweep starts its workflow.
                        return
                    if route is _Route.DIRECT and self._direct_runs_ended:
                        # The slot came free because the running direct tasks
                        # were ended at shutdown: this one never starts here;
                        # the start-up sweep settles it.
                        return
                metrics.IN_FLIGHT.labels(label).inc()
                in_flight = True
                mode_used = await self._run(context, events, route, started_working)
            finally:
                if in_flight:
                    metrics.IN_FLIGHT.labels(label).dec()
                metrics.TASK_DURATION.labels(label).observe(time.monotonic() - started)
                if events.first_chunk_at is not None:
                    metrics.FIRST_CHUNK.labels(label).observe(events.first_chunk_at - started)
                ended = events.terminal_state
                state = (outcome_of(ended) if ended is not None else None) or (
                    Outcome.INPUT_REQUIRED if events.input_required.is_set() else Outcome.CANCELED
                )
                metrics.TASKS.labels(state, mode_used).inc()
        finally:
            if ticket is not None:
                ticket.release()

    async def _reply(
        self, context: RequestContext, events: TaskEvents, event_queue: EventQueue
    ) -> None:
        """An adapter that replies with a Message: run it here, in any mode (there
        is no task to make durable), and send its Message; a Task only when it
        could not answer that way (rejected, failed)."""
        ticket = claim(context.call_context)
        try:
            if ticket is not None and not ticket.try_start():
                await ticket.start()
            continues = context.call_context.state.get(CONTINUES_CONTEXT, True)
            history = await self._history(context) if continues else []
            task = request_task_input(context, history, self.history_bytes)
            reply = await collect_reply(self.adapter, task, self.max_file_bytes)
        finally:
            if ticket is not None:
                ticket.release()
        if reply.state is None:
            message = reply_message(task, reply.parts)
            # Kept for a repeat of the request, before the client can see it.
            taken = self._claim(context)
            if self.message_ids is not None and taken is not None and taken.replies:
                await self.message_ids.set_reply(taken, message.SerializeToString())
            await event_queue.enqueue_event(message)
            metrics.TASKS.labels(Outcome.COMPLETED, Mode.DIRECT).inc()
            return
        await events.created(context.message, metadata={Meta.INSTANCE: self.instance_id})
        await events.status(reply.state, reply.text)
        metrics.TASKS.labels(outcome_of(reply.state) or Outcome.FAILED, Mode.DIRECT).inc()

    @staticmethod
    def _claim(context: RequestContext) -> MessageClaim | None:
        claim = context.call_context.state.get(MESSAGE_CLAIM)
        return claim if isinstance(claim, MessageClaim) else None

    async def _not_taken(self, context: RequestContext, events: TaskEvents, why: str) -> None:
        """The answer could not be handed to the workflow: the task asks again,
        and the answer's id is given back so that sending it again is taken."""
        await events.status(TaskState.TASK_STATE_INPUT_REQUIRED, why)
        claim = self._claim(context)
        if self.message_ids is not None and claim is not None:
            try:
                await self.message_ids.release(claim)
            except Exception:
                log.exception("could not give back message id %s", claim.message_id)

    async def _input(self, context: RequestContext) -> TaskInput:
        """The adapter's input for a run in this process (durable runs get ids)."""
        continues = context.call_context.state.get(CONTINUES_CONTEXT, True)
        history = await self._history(context) if continues else []
        return request_task_input(context, history, self.history_bytes)

    async def _run(
        self, context: RequestContext, events: TaskEvents, route: _Route, started_working: bool
    ) -> Mode:
        """Run the task; return the mode it actually ran in."""
        ref = TaskRef(str(context.task_id), str(context.context_id), _message_id(context))
        if route is _Route.RESUME:
            if self.durable is None:
                await self._not_taken(
                    context,
                    events,
                    "This task waits on Temporal, but this server runs without durable mode "
                    "(TEMPORAL_HOST); send the answer to a durable server.",
                )
                return Mode.DIRECT
            # The next turn runs now, as in direct mode. The answer (and the
            # request's metadata) is stored before the workflow is told its id.
            record = request_metadata_record(ref.message_id, context.metadata)
            await events.status(
                TaskState.TASK_STATE_WORKING, metadata=record if context.metadata else None
            )
            await events.persisted()
            if not await self.durable.resume(ref, events):
                await self._not_taken(
                    context,
                    events,
                    "Temporal is unreachable right now, so this answer was not taken; "
                    "send it again in a moment.",
                )
            return Mode.DURABLE
        if route is _Route.DURABLE and self.durable is not None:
            if await self.durable.run(ref, events):
                return Mode.DURABLE
            metrics.FALLBACKS.inc()
            log.warning("Temporal unreachable before the task started: running it directly")
        task = await self._input(context)
        run = self._track_direct()
        try:
            await run_direct(
                self.adapter,
                task,
                events,
                self.span_attributes,
                announce=not started_working,
                batch_window=self.batch_window,
                shutting_down=self.draining.is_set,
            )
        except asyncio.CancelledError:
            if run is not None and run in self._stopped_runs:
                # Ended by the drain while its stream is still open: the final
                # state goes through the stream (and the store) like any other.
                run.uncancel()
                try:
                    await events.status(TaskState.TASK_STATE_FAILED, SHUT_DOWN)
                    return Mode.DIRECT
                except Exception:
                    log.debug("task %s: the stream closed before its final state", task.task_id)
            if self.draining.is_set():
                # The stream is being torn down: the final state goes straight
                # to the store, so no replica leaves the task working for ever.
                fail = headless_events(self.store, task.task_id, task.context_id)
                with contextlib.suppress(Exception):
                    await asyncio.shield(fail.status(TaskState.TASK_STATE_FAILED, SHUT_DOWN))
            raise
        finally:
            if run is not None:
                self._direct_runs.discard(run)
                self._stopped_runs.discard(run)
        return Mode.DIRECT

    def _track_direct(self) -> asyncio.Task[object] | None:
        """Note the running direct task, to be ended before the streams close at shutdown."""
        run = asyncio.current_task()
        if run is None or self.stop_direct_after is None:
            return None
        self._direct_runs.add(run)
        if self._direct_runs_ended:
            # Started after the running ones were ended (a request still on an
            # open connection): ended at its first await, the same way.
            self._stopped_runs.add(run)
            run.cancel("the server is shutting down")
        if self._drain_watch is None:
            self._drain_watch = asyncio.ensure_future(self._end_direct_runs_when_draining())
        return run

    async def _end_direct_runs_when_draining(self) -> None:
        assert self.stop_direct_after is not None
        await self.draining.wait()
        await asyncio.sleep(self.stop_direct_after)
        self._direct_runs_ended = True
        for run in list(self._direct_runs):
            self._stopped_runs.add(run)
            run.cancel("the server is shutting down")

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # Direct mode needs nothing here: the SDK cancels the asyncio task that
        # runs `execute`, which delivers CancelledError to the adapter.
        if self.durable is not None and context.task_id:
            await self.durable.cancel(str(context.task_id))
