"""Dispatch: what happens to a request's task once the SDK handed it to the
executor (server/executor.py). It creates the Task, takes a running slot
(execution/admission.py), chooses the route once, before anything ran
(execution/route.py), and runs it: directly here (execution/direct.py, ended
at shutdown by execution/drain.py), durably as a workflow, or as the resumed
turn of one; an adapter that replies with a Message is answered right here
(execution/message_reply.py)."""

from __future__ import annotations

import asyncio
import functools
import logging

from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.types.a2a_pb2 import Task, TaskState

from molecule_runtime.adapters.base import BaseAdapter
from molecule_runtime.execution.admission import Ticket, claim
from molecule_runtime.execution.drain import DirectRuns
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.execution.handoff import Handoff, attached
from molecule_runtime.execution.inputs import request_metadata_record
from molecule_runtime.execution.live import live_events
from molecule_runtime.execution.message_reply import reply_to_request
from molecule_runtime.execution.parts import has_usable_part
from molecule_runtime.execution.request_input import RequestInputs
from molecule_runtime.execution.route import DIRECT, DURABLE, DurableRoute, Route, choose_route
from molecule_runtime.execution.run_metrics import RunMetrics
from molecule_runtime.execution.run_settings import RunSettings
from molecule_runtime.observability import metrics
from molecule_runtime.observability.logs import current_task_id
from molecule_runtime.states import TERMINAL_STATES
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.message_ids import MessageIds
from molecule_runtime.vocabulary import Meta, Mode

log = logging.getLogger(__name__)

CANCELED_WAITING = "Canceled while it waited for a free slot; it never ran."

REJECT_NO_INPUT = (
    "The message has nothing to act on: no non-empty text, no file and no data part. "
    "Send a message with at least one of them."
)


async def _stored_task(store: ObservedTaskStore, task_id: str, context: RequestContext) -> Task | None:
    stored = await store.get(task_id, context.call_context)
    return stored.task if stored is not None else None


def _message_id(context: RequestContext) -> str:
    return context.message.message_id if context.message is not None else ""


class Dispatch:
    def __init__(
        self,
        adapter: BaseAdapter,
        store: ObservedTaskStore,
        run: RunSettings,
        *,
        durable: DurableRoute | None = None,
        instance_id: str = "",
        draining: asyncio.Event | None = None,
        message_ids: MessageIds | None = None,
        stop_direct_after: float | None = None,
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.run = run
        self.durable = durable
        self.instance_id = instance_id
        self.message_ids = message_ids
        self.inputs = RequestInputs(store, run.history_bytes)
        self.direct_runs = DirectRuns(store, draining or asyncio.Event(), stop_direct_after)
        self.span_attributes = {"workspace_id": run.workspace_id, "adapter": adapter.name()}

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        current_task_id.set(str(context.task_id))
        current = context.current_task
        if current is not None and current.status.state in TERMINAL_STATES:
            return
        events = live_events(context, event_queue, self.store, self.run.max_file_bytes)
        # What a retry continues, where the step journal cannot read it (memory store).
        events.stored_task = functools.partial(_stored_task, self.store, str(context.task_id), context)
        handoff = attached(context.call_context) or Handoff()
        has_input = has_usable_part(context.message)
        replies = handoff.replies_with_message
        if replies is None:
            replies = self.adapter.replies_with_message
        if current is None and has_input and replies:
            await reply_to_request(
                self.adapter,
                context,
                handoff,
                events,
                event_queue,
                inputs=self.inputs,
                max_file_bytes=self.run.max_file_bytes,
                message_ids=self.message_ids,
                instance_id=self.instance_id,
            )
            return
        route = choose_route(current, self.durable)
        if current is not None and not has_input:
            await events.status(TaskState.TASK_STATE_INPUT_REQUIRED, REJECT_NO_INPUT)
            return
        # Admission control: the request handler admitted this message; it runs
        # once it holds a running slot, which it keeps until this run ends (not
        # while the task waits for input).
        ticket = claim(handoff.ticket) if has_input else None
        try:
            await self._admitted(context, events, route, ticket, has_input)
        finally:
            if ticket is not None:
                ticket.release()

    async def _admitted(
        self,
        context: RequestContext,
        events: TaskEvents,
        route: Route,
        ticket: Ticket | None,
        has_input: bool,
    ) -> None:
        current = context.current_task
        started_working = False
        if current is None:
            # The SDK requires the Task before any status update. A direct
            # task that can start at once starts out working: one event (and
            # store write) fewer. One that must wait is submitted until then.
            direct = has_input and route == DIRECT
            started_working = direct and (ticket is None or ticket.try_start())
            metadata = {Meta.INSTANCE: self.instance_id}
            if direct:
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
        if self.durable is not None and route == DIRECT and current is None:
            metrics.FALLBACKS.inc()
        measured = RunMetrics(route.mode)
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
                if route == DIRECT and self.direct_runs.ended:
                    # The slot came free because the running direct tasks
                    # were ended at shutdown: this one never starts here;
                    # the start-up sweep settles it.
                    return
            measured.running()
            measured.mode_used = await self._run(context, events, route, started_working)
        finally:
            measured.ended(events)

    async def _run(
        self, context: RequestContext, events: TaskEvents, route: Route, started_working: bool
    ) -> Mode:
        """Run the task; return the mode it actually ran in."""
        ids = (str(context.task_id), str(context.context_id), _message_id(context))
        if route.resume:
            return await self._resume(context, events, ids)
        if route == DURABLE and self.durable is not None:
            # The workflow names the task by id, so it never exists before the task
            # does: a crash in between would leave it a task nobody stored.
            await events.persisted()
            if await self.durable.run(*ids, events, functools.partial(self.inputs.of, context)):
                return Mode.DURABLE
            metrics.FALLBACKS.inc()
            log.warning("Temporal unreachable before the task started: running it directly")
        task = await self.inputs.of(context)
        await self.direct_runs.run(
            self.adapter,
            task,
            events,
            self.span_attributes,
            announce=not started_working,
            batch_window=self.run.batch_window,
        )
        return Mode.DIRECT

    async def _resume(
        self, context: RequestContext, events: TaskEvents, ids: tuple[str, str, str]
    ) -> Mode:
        """The next turn of a durable task: its waiting workflow is given the answer."""
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
        record = request_metadata_record(ids[2], context.metadata)
        await events.status(
            TaskState.TASK_STATE_WORKING, metadata=record if context.metadata else None
        )
        await events.persisted()
        if not await self.durable.resume(*ids, events):
            await self._not_taken(
                context,
                events,
                "Temporal is unreachable right now, so this answer was not taken; "
                "send it again in a moment.",
            )
        return Mode.DURABLE

    async def _not_taken(self, context: RequestContext, events: TaskEvents, why: str) -> None:
        """The answer could not be handed to the workflow: the task asks again,
        and the answer's id is given back so that sending it again is taken."""
        await events.status(TaskState.TASK_STATE_INPUT_REQUIRED, why)
        handoff = attached(context.call_context)
        taken = handoff.claim if handoff is not None else None
        if self.message_ids is not None and taken is not None:
            try:
                await self.message_ids.release(taken)
            except Exception:
                log.exception("could not give back message id %s", taken.message_id)

    async def cancel(self, task_id: str) -> None:
        # Direct mode needs nothing here: the SDK cancels the asyncio task that
        # runs `execute`, which delivers CancelledError to the adapter.
        if self.durable is not None:
            await self.durable.cancel(task_id)
