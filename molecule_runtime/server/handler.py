"""The SDK's request handler, composed with the runtime's rules: the send gate
(server/send_gate.py: limits, submission rules, repeats, admission), streams
replayed from the task's event log (server/replay.py), CancelTask for tasks
running elsewhere (server/remote_cancel.py) and checks of the read methods
(server/read_checks.py)."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskStatusUpdateEvent,
)
from a2a.utils.task import apply_history_length

from molecule_runtime.execution.admission import Admission
from molecule_runtime.sdk_seam import answer_taken, runs_here, single_process_note_silenced
from molecule_runtime.server.complexity import RequestBounds
from molecule_runtime.server.context_builder import ConversationContextBuilder
from molecule_runtime.server.read_checks import check_get, check_list
from molecule_runtime.server.remote_cancel import RemoteCancel
from molecule_runtime.server.repeats import Repeats
from molecule_runtime.server.replay import EventReplay
from molecule_runtime.server.send_gate import SendGate
from molecule_runtime.server.sse_ids import set_offset
from molecule_runtime.server.submission import SubmissionRules
from molecule_runtime.store import LiveEventOffsets, ObservedTaskStore, TaskEventLog

if TYPE_CHECKING:
    from molecule_runtime.durable.client import DurableTasks

# Seconds a task waiting for input keeps its live producer in this process
# (an answer within that time skips one store read).
PARKED_RELEASE_AFTER = 1.0


def _task_id_of(event: object) -> str:
    if isinstance(event, Task):
        return event.id
    if isinstance(event, TaskStatusUpdateEvent | TaskArtifactUpdateEvent | Message):
        return event.task_id
    return ""


def _opening_task(before: Task, answer: Message, first: TaskStatusUpdateEvent | None) -> Task:
    """The task as it stands when its answer's turn begins: the stored task
    `before` with the answer in its history (the question moved there first, as
    the SDK stores it) and the status of the turn's first event, if given."""
    task = Task()
    task.CopyFrom(before)
    if task.status.HasField("message"):
        task.history.append(task.status.message)
        task.status.ClearField("message")
    if not any(m.message_id == answer.message_id for m in task.history):
        task.history.append(answer)
    if first is not None:
        task.status.CopyFrom(first.status)
    return task


class RuntimeRequestHandler(DefaultRequestHandler):
    """SendMessage / SendStreamingMessage first pass the send gate, which takes a
    place from admission control (execution/admission.py); dispatch takes that
    ticket over, with the rest of the hand-off (execution/handoff.py)."""

    def __init__(
        self,
        *,
        task_store: ObservedTaskStore,
        event_log: TaskEventLog | None,
        durable: DurableTasks | None = None,
        live_offsets: LiveEventOffsets | None = None,
        admission: Admission | None = None,
        submissions: SubmissionRules | None = None,
        draining: Callable[[], bool] = lambda: False,
        bounds: RequestBounds | None = None,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("request_context_builder", ConversationContextBuilder())
        # A task waiting for input keeps nothing in memory: the SDK drops its
        # live producer, and the answer rebuilds it from the store.
        kwargs.setdefault("interrupted_task_timeout", PARKED_RELEASE_AFTER)
        # The in-memory store is wrapped as a versioned store only so that its
        # writes can be observed (push); it serves one process, which the SDK
        # would otherwise warn about at every start.
        with single_process_note_silenced():
            super().__init__(task_store=task_store, event_stream=event_log, **kwargs)  # type: ignore[arg-type]
        self._store = task_store
        self._live_offsets = live_offsets
        self._bounds = bounds
        self._gate = SendGate(
            task_store,
            rules=submissions,
            admission=admission,
            bounds=bounds,
            draining=draining,
            cancel=self._interrupt,
        )
        self._replay = EventReplay(
            task_store,
            event_log,
            answer_taken=functools.partial(answer_taken, self),
            live_only=super().on_subscribe_to_task,
        )
        self._remote_cancel = RemoteCancel(task_store, durable, functools.partial(runs_here, self))

    async def _interrupt(self, task_id: str, context: ServerCallContext) -> None:
        await self.on_cancel_task(CancelTaskRequest(id=task_id), context)

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        gate = self._gate
        gate.check(params, context)
        submission, answer = await gate.submit_or_repeat(
            params, context, lambda repeats, claim: repeats.result(claim, params, context)
        )
        if answer is not None:
            if isinstance(answer, Message):
                return answer
            return gate.blocking_answer(apply_history_length(answer, params.configuration), params)
        try:
            with gate.entered(context, submission):
                await gate.held(submission)
                result = await super().on_message_send(params, context)
        except Exception:
            await gate.refused(submission, params, context)
            raise
        return gate.blocking_answer(result, params)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        gate = self._gate
        gate.check(params, context)
        submission, answer = await gate.submit_or_repeat(params, context, Repeats.first_answer)
        if answer is not None:
            assert submission.repeat_of is not None
            # A repeat attaches to the live stream of the first send's task.
            message_id = submission.repeat_of.message_id
            async for event in self._replay.repeated_stream(answer, message_id, context):
                yield event
            return
        started = False
        # An answer to a task that waits for input: the SDK streams its turn from
        # `working` on, but a task's stream begins with the Task (A2A 1.0 §3.1.2).
        waiting = await self._store.get(params.message.task_id, context) if params.message.task_id else None
        try:
            with gate.entered(context, submission):
                await gate.held(submission)
                async for event in super().on_message_send_stream(params, context):
                    offset = None
                    if self._live_offsets is not None:
                        offset = self._live_offsets.lookup(_task_id_of(event), event)
                    if not started and waiting is not None and not isinstance(event, Task | Message):
                        # A first status update is folded into the Task (with its offset).
                        folded = isinstance(event, TaskStatusUpdateEvent)
                        set_offset(context, offset if folded else None)
                        started = True
                        yield _opening_task(
                            waiting.task, params.message, event if folded else None
                        )
                        if folded:
                            continue
                    started = True
                    set_offset(context, offset)
                    yield event
        except Exception:
            if not started:
                await gate.refused(submission, params, context)
            raise

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """From the shared event log (server/replay.py)."""
        async for event in self._replay.subscribe(params, context):
            yield event

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        await self._remote_cancel(params.id, context)
        return await super().on_cancel_task(params, context)

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        check_list(params, self._bounds)
        return await super().on_list_tasks(params, context)

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        check_get(params, self._bounds)
        return await super().on_get_task(params, context)
