"""The runtime's A2A `AgentExecutor`: validates a request and runs it directly or durably."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Protocol

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.cluster.task_store import VersionedTaskStore
from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import ListTasksRequest, TaskState

from molecule_runtime import metrics
from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.execution.admission import claim
from molecule_runtime.execution.direct import MODE_KEY, run_direct
from molecule_runtime.execution.events import (
    STATE_LABELS,
    TERMINAL_STATES,
    TaskEvents,
    artifact_id_for,
)
from molecule_runtime.execution.inputs import build_task_input, history_from_tasks, turn_of
from molecule_runtime.logs import current_task_id
from molecule_runtime.recovery import INSTANCE_KEY
from molecule_runtime.store import ObservedTaskStore

log = logging.getLogger(__name__)

# Set by the request context builder: False when the client started a new
# conversation, so there is no history to look up.
CONTINUES_CONTEXT = "molecule.continues_context"

CANCELED_WAITING = "Canceled while it waited for a free slot; it never ran."

REJECT_NO_TEXT = (
    "This agent accepts text: the message has no text part (or only empty text). "
    "Send a message with at least one non-empty text part."
)


async def events_taken(event_queue: EventQueue) -> None:
    """Wait until the SDK's consumer has handed every event enqueued so far to
    the task store.

    Events reach the store through the SDK's consumer, after `enqueue_event`
    has returned. The source queue feeds the consumer's sink, which is marked
    done per event once the store has taken it. No time limit: under load the
    store is slow, not broken, and a durable stage keeps heartbeating meanwhile.
    """
    for queue_name in ("_incoming_queue", "queue"):
        queue = getattr(event_queue, queue_name, None)
        while queue is not None and not event_queue.is_closed():
            try:
                # Re-check now and then: the SDK may tear the queues down
                # (task finished elsewhere), and then nothing more is taken.
                async with asyncio.timeout(1.0):
                    await queue.join()
                break
            except TimeoutError:
                continue


async def events_stored(event_queue: EventQueue, store: VersionedTaskStore, task_id: str) -> None:
    """Wait until every event enqueued so far is in the database.

    A durable stage must not report itself done to Temporal before its events
    are stored, or a crash in between would lose them for good.
    """
    await events_taken(event_queue)
    if isinstance(store, ObservedTaskStore):
        await store.wait_stored(task_id)


class DurableRunner(Protocol):
    """What the executor needs from durable mode (see molecule_runtime.durable)."""

    def accepting(self) -> bool:
        """True when new tasks should run on Temporal."""
        ...

    async def run(self, task: TaskInput, events: TaskEvents) -> bool:
        """Run `task` as a workflow; False if Temporal refused it before anything ran."""
        ...

    async def cancel(self, task_id: str) -> bool:
        """Cancel the workflow of a task running here; False if none is known."""
        ...

    async def resume(self, task: TaskInput, events: TaskEvents) -> bool:
        """Give a waiting workflow the user's answer; False if Temporal is unreachable."""
        ...


class RuntimeExecutor(AgentExecutor):
    def __init__(
        self,
        adapter: BaseAdapter,
        store: VersionedTaskStore,
        durable: DurableRunner | None = None,
        *,
        workspace_id: str = "",
        batch_window: float = 0.0,
        instance_id: str = "",
    ) -> None:
        self.batch_window = batch_window
        self.instance_id = instance_id
        self.adapter = adapter
        self.store = store
        self.durable = durable
        self.span_attributes = {"workspace_id": workspace_id, "adapter": adapter.name()}

    async def _history(self, context: RequestContext) -> list[tuple[str, str]]:
        """Earlier tasks of the same conversation (A2A context)."""
        try:
            page = await self.store.list(
                ListTasksRequest(context_id=str(context.context_id), include_artifacts=True),
                context.call_context,
            )
        except Exception:
            log.exception("could not read the history of context %s", context.context_id)
            return []
        tasks = sorted(page.tasks, key=lambda t: t.status.timestamp.ToNanoseconds())
        return history_from_tasks(list(tasks), str(context.task_id))

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
            event_queue.enqueue_event,
            artifact_id=artifact_id_for(task_id, turn),
            persisted=functools.partial(events_stored, event_queue, self.store, task_id),
            settled=functools.partial(events_taken, event_queue),
        )
        has_text = bool(context.get_user_input().strip())
        if current is not None:
            # A later turn (the user answers a question) continues in the
            # mode the task started in: a durable task's workflow is waiting.
            mode = "resume" if dict(current.metadata).get(MODE_KEY) == "durable" else "direct"
            if not has_text:
                await events.status(TaskState.TASK_STATE_INPUT_REQUIRED, REJECT_NO_TEXT)
                return
        elif self.durable is not None and self.durable.accepting():
            mode = "durable"
        else:
            mode = "direct"
        # Admission control (execution/admission.py): the request handler
        # admitted this message; it runs once it holds a running slot, which
        # it keeps until this run ends (not while the task waits for input).
        ticket = claim(context.call_context) if has_text else None
        try:
            started_working = False
            if current is None:
                # The SDK requires the Task before any status update. A direct
                # task that can start at once starts out working: one event (and
                # store write) fewer. One that must wait is submitted until then.
                started_working = (
                    has_text and mode == "direct" and (ticket is None or ticket.try_start())
                )
                metadata = {INSTANCE_KEY: self.instance_id}
                if has_text and mode == "direct":
                    # Also while it waits: if the process dies, the start-up sweep fails it.
                    metadata[MODE_KEY] = "direct"
                await events.created(
                    context.message,
                    TaskState.TASK_STATE_WORKING if started_working else TaskState.TASK_STATE_SUBMITTED,
                    metadata,
                )
            if not has_text:
                await events.status(TaskState.TASK_STATE_REJECTED, REJECT_NO_TEXT)
                return
            if self.durable is not None and mode == "direct" and current is None:
                metrics.FALLBACKS.inc()
            started = time.monotonic()
            label = "direct" if mode == "direct" else "durable"
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
                continues = context.call_context.state.get(CONTINUES_CONTEXT, True)
                history = await self._history(context) if continues else []
                task = build_task_input(context, history)
                metrics.IN_FLIGHT.labels(label).inc()
                in_flight = True
                mode_used = await self._run(task, events, mode, started_working)
            finally:
                if in_flight:
                    metrics.IN_FLIGHT.labels(label).dec()
                metrics.TASK_DURATION.labels(label).observe(time.monotonic() - started)
                if events.first_chunk_at is not None:
                    metrics.FIRST_CHUNK.labels(label).observe(events.first_chunk_at - started)
                state = STATE_LABELS.get(events.terminal_state) or (
                    "input-required" if events.input_required.is_set() else "canceled"
                )
                metrics.TASKS.labels(state, mode_used).inc()
        finally:
            if ticket is not None:
                ticket.release()

    async def _run(
        self, task: TaskInput, events: TaskEvents, mode: str, started_working: bool
    ) -> str:
        """Run the task; return the mode it actually ran in."""
        if mode == "resume":
            if self.durable is None:
                await events.status(
                    TaskState.TASK_STATE_INPUT_REQUIRED,
                    "This task waits on Temporal, but this server runs without durable mode "
                    "(TEMPORAL_HOST); send the answer to a durable server.",
                )
                return "direct"
            if not await self.durable.resume(task, events):
                await events.status(
                    TaskState.TASK_STATE_INPUT_REQUIRED,
                    "Temporal is unreachable right now, so this answer was not taken; "
                    "send it again in a moment.",
                )
            return "durable"
        if mode == "durable":
            assert self.durable is not None
            if await self.durable.run(task, events):
                return "durable"
            metrics.FALLBACKS.inc()
            log.warning("Temporal unreachable before the task started: running it directly")
        await run_direct(
            self.adapter,
            task,
            events,
            self.span_attributes,
            announce=not started_working,
            batch_window=self.batch_window,
        )
        return "direct"

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # Direct mode needs nothing here: the SDK cancels the asyncio task that
        # runs `execute`, which delivers CancelledError to the adapter.
        if self.durable is not None and context.task_id:
            await self.durable.cancel(str(context.task_id))
