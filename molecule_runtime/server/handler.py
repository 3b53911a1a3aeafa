"""The SDK's request handler, plus the submission rules, workflow cancellation for
tasks not running here and streams that resume from an offset in the task's event log."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from typing import TYPE_CHECKING, TypeVar

from a2a.server.agent_execution import RequestContext, SimpleRequestContextBuilder
from a2a.server.cluster import StoredTask
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    A2AError,
    InvalidParamsError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.task import apply_history_length

from molecule_runtime.execution.admission import Admission, RetryLater, Ticket
from molecule_runtime.sdk_seam import (
    answer_taken,
    runs_here,
    single_process_note_silenced,
    version_number,
)
from molecule_runtime.server.busy import note_refusal
from molecule_runtime.server.complexity import SHAPE_CHECKED, RequestBounds
from molecule_runtime.server.repeats import Repeats, StaleClaim, settled_for
from molecule_runtime.server.sse_ids import requested_offset, set_offset
from molecule_runtime.server.submission import ASSIGNED_TASK_ID, Submission, SubmissionRules
from molecule_runtime.states import INTERRUPTED_STATES, TERMINAL_STATES, is_interrupted, is_terminal
from molecule_runtime.store import LiveEventOffsets, ObservedTaskStore, TaskEventLog
from molecule_runtime.store.message_ids import MessageClaim
from molecule_runtime.vocabulary import CONTINUES_CONTEXT

if TYPE_CHECKING:
    from molecule_runtime.durable.client import DurableTasks

# Seconds a task waiting for input keeps its live producer in this process
# (an answer within that time skips one store read).
PARKED_RELEASE_AFTER = 1.0

_Answer = TypeVar("_Answer")


class HandedOver(RetryLater):
    """A blocking send whose task had not finished when this server began to shut
    down: the task goes on elsewhere (a durable workflow is handed over, never
    cancelled), and the same message sent again attaches to it on any replica."""

    reason = "SERVER_SHUTTING_DOWN"
    retry_after = 1

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"This server is shutting down before task {task_id} finished; the task goes on "
            "on another replica. To receive its result, send the same message again (the same "
            "messageId), to any replica: it is not run a second time."
        )


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


class ConversationContextBuilder(SimpleRequestContextBuilder):
    """Notes whether the client named an existing conversation (context id),
    and gives a new task the id its message was claimed for (submission.py).

    A new conversation has no earlier turns, so the executor can skip the
    history look-up in the task store for it.
    """

    async def build(
        self,
        context: ServerCallContext,
        params: SendMessageRequest | None = None,
        task_id: str | None = None,
        context_id: str | None = None,
        task: Task | None = None,
    ) -> RequestContext:
        # The submission rules fill in ids, so they note it first.
        context.state.setdefault(CONTINUES_CONTEXT, bool(context_id or task_id))
        task_id = task_id or context.state.get(ASSIGNED_TASK_ID)
        return await super().build(context, params, task_id, context_id, task)


class RuntimeRequestHandler(DefaultRequestHandler):
    """CancelTask also reaches tasks recovered headless (after a crash, on another worker).

    The SDK calls the executor's `cancel()` only for tasks whose stream lives in
    this process; for the others it just records CANCELED in the store, which
    would leave the workflow (and the adapter) running.

    SendMessage / SendStreamingMessage first take a place from admission control
    (molecule_runtime/execution/admission.py); the executor takes that ticket over.
    """

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
        self._event_log = event_log
        self._durable = durable
        self._live_offsets = live_offsets
        self._admission = admission
        self._submissions = submissions
        self._repeats = Repeats(submissions) if submissions is not None else None
        self._draining = draining
        self._bounds = bounds
        if submissions is not None:
            submissions.cancel = self._interrupt

    @contextlib.contextmanager
    def _admitted(self, context: ServerCallContext, submission: Submission) -> Iterator[None]:
        """A place in line for this message, taken before the SDK creates or
        stores anything (a full line refuses it, see server/busy.py), and given
        back if the executor did not take it over. A follow-up the policy holds
        back waits in its ticket (`submitted`), or without admission control
        here, before its task exists."""
        ticket: Ticket | None = None
        if self._admission is not None:
            try:
                ticket = self._admission.admit(context, submission.hold)
            except RetryLater as exc:
                note_refusal(exc)
                raise
        try:
            yield
        finally:
            if ticket is not None:
                ticket.release_unclaimed()

    async def _interrupt(self, task_id: str, context: ServerCallContext) -> None:
        await self.on_cancel_task(CancelTaskRequest(id=task_id), context)

    async def _submit(self, params: SendMessageRequest, context: ServerCallContext) -> Submission:
        """The submission rules (server/submission.py) before anything is created."""
        if self._submissions is None:
            return Submission()
        context.state[CONTINUES_CONTEXT] = bool(
            params.message.context_id or params.message.task_id
        )
        try:
            return await self._submissions.submit(params, context)
        except RetryLater as exc:
            note_refusal(exc)
            raise

    async def _refused(
        self, submission: Submission, params: SendMessageRequest, context: ServerCallContext
    ) -> None:
        """The SDK refused the message: its id is given back unless it was taken
        after all (its task exists, the answer reached the task's history, or
        its Message reply was sent)."""
        claim = submission.claim
        if self._submissions is None or claim is None:
            return
        if claim.replies:
            current = await self._submissions.message_ids.get(claim.owner, claim.message_id)
            if current is not None and current.reply:
                return
        stored = await self._store.get(claim.task_id, context)
        if stored is not None and (
            claim.task_id != params.message.task_id
            or any(m.message_id == claim.message_id for m in stored.task.history)
        ):
            return
        await submission.refused(self._submissions.message_ids)

    async def _submit_or_repeat(
        self,
        params: SendMessageRequest,
        context: ServerCallContext,
        answer_of: Callable[[Repeats, MessageClaim], Awaitable[_Answer]],
    ) -> tuple[Submission, _Answer | None]:
        """The submission of this message, with the first send's answer if it repeats
        one. A repeat of a send that died before creating its task takes the
        message over (one more try)."""
        sent = Message()
        sent.CopyFrom(params.message)
        for attempt in (1, 2):
            params.message.CopyFrom(sent)
            submission = await self._submit(params, context)
            if submission.repeat_of is None:
                return submission, None
            assert self._repeats is not None
            try:
                return submission, await answer_of(self._repeats, submission.repeat_of)
            except StaleClaim as exc:
                if attempt == 2:
                    raise UnsupportedOperationError(message=str(exc)) from exc
        raise AssertionError("unreachable")

    async def _held(self, submission: Submission) -> None:
        if submission.hold is not None and self._admission is None:
            await submission.hold

    def _check_send(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        """Complexity limits (server/complexity.py), before anything is claimed or queued."""
        if self._bounds is not None:
            walk = not context.state.get(SHAPE_CHECKED)
            self._bounds.check_send(params, walk_values=walk)

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Message | Task:
        self._check_send(params, context)
        submission, answer = await self._submit_or_repeat(
            params, context, lambda repeats, claim: repeats.result(claim, params, context)
        )
        if answer is not None:
            if isinstance(answer, Message):
                return answer
            return self._blocking_answer(apply_history_length(answer, params.configuration), params)
        try:
            with self._answering(submission), self._admitted(context, submission):
                await self._held(submission)
                result = await super().on_message_send(params, context)
        except Exception:
            await self._refused(submission, params, context)
            raise
        return self._blocking_answer(result, params)

    def _blocking_answer(self, result: Message | Task, params: SendMessageRequest) -> Message | Task:
        """A blocking send ends with the task finished or waiting for the client.
        One cut short by this server's shutdown is refused as retryable instead:
        the client would otherwise take the unfinished task for its answer."""
        if (
            isinstance(result, Task)
            and not params.configuration.return_immediately
            and not (is_terminal(result) or is_interrupted(result))
            and self._draining()
        ):
            error = HandedOver(result.id)
            note_refusal(error)
            raise error
        return result

    def _answering(self, submission: Submission) -> contextlib.AbstractContextManager[None]:
        if self._repeats is None:
            return contextlib.nullcontext()
        return self._repeats.answering(submission.claim)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        self._check_send(params, context)
        submission, answer = await self._submit_or_repeat(params, context, Repeats.first_answer)
        if answer is not None:
            assert submission.repeat_of is not None
            # A repeat attaches to the live stream of the first send's task.
            message_id = submission.repeat_of.message_id
            async for event in self._repeated_stream(answer, message_id, context):
                yield event
            return
        started = False
        # An answer to a task that waits for input: the SDK streams its turn from
        # `working` on, but a task's stream begins with the Task (A2A 1.0 §3.1.2).
        waiting = await self._store.get(params.message.task_id, context) if params.message.task_id else None
        try:
            with self._answering(submission), self._admitted(context, submission):
                await self._held(submission)
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
                await self._refused(submission, params, context)
            raise

    async def _waits_unanswered(self, stored: StoredTask) -> bool:
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
        return not stored_answer and not await answer_taken(self, task.id)

    async def _repeated_stream(
        self, answer: Task | Message, message_id: str, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """The first send's Message; or its task's snapshot, then its events until
        it answered this message (as a subscription follows it)."""
        if isinstance(answer, Message):
            set_offset(context, None)
            yield answer
            return
        stored = await self._store.get(answer.id, context)
        if stored is None:
            raise TaskNotFoundError
        if settled_for(stored.task, message_id):
            set_offset(context, version_number(stored.version) or None)
            yield stored.task
            return
        try:
            async for event in self._task_events(stored, None, context):
                yield event
        except A2AError:
            # It ended between the read and the subscription: the task as it is now.
            latest = await self._store.get(answer.id, context)
            if latest is None or not settled_for(latest.task, message_id):
                raise
            set_offset(context, None)
            yield latest.task

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """Without `Last-Event-ID`: the task, then its events as they happen (the
        SDK's contract). With it: the logged events after that offset, then live
        ones, also for a finished task. Either way from the shared event log, so
        it works whichever process runs (or recovers) the task, and after restarts.

        A task that waits for input with no answer taken: the snapshot (with
        `Last-Event-ID`, the events after it, else the snapshot), and the stream
        ends. Otherwise it follows the task to its end or its next question.
        """
        stored = await self._store.get(params.id, context)
        if self._event_log is None and (stored is None or not await self._waits_unanswered(stored)):
            # In-memory store: no event log, the SDK's live-only subscription.
            async for event in super().on_subscribe_to_task(params, context):
                set_offset(context, None)
                yield event
            return
        if stored is None:
            raise TaskNotFoundError
        offset = requested_offset(context) if self._event_log is not None else None
        if offset is None and stored.task.status.state in TERMINAL_STATES:
            raise UnsupportedOperationError(
                message=f"Task {params.id} is in terminal state: "
                f"{TaskState.Name(stored.task.status.state)} "
                "(send Last-Event-ID: 0 to replay its events)"
            )
        async for event in self._task_events(stored, offset, context):
            yield event

    async def _task_events(
        self, stored: StoredTask, offset: int | None, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """A task's events to its end or its current question: after `offset` in
        the event log, or (None) its snapshot first and then its events."""
        task_id = stored.task.id
        log = self._event_log
        if log is None:
            if await self._waits_unanswered(stored):
                set_offset(context, None)
                yield stored.task
                return
            # In-memory store: no event log, the SDK's live-only subscription.
            async for event in super().on_subscribe_to_task(
                SubscribeToTaskRequest(id=task_id), context
            ):
                set_offset(context, None)
                yield event
            return
        current = version_number(stored.version)
        finished = stored.task.status.state in TERMINAL_STATES
        waiting = await self._waits_unanswered(stored)
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
                # A replay passes earlier questions; it ends at the current one.
                if is_interrupted(event) and not await log.read_after(task_id, version):
                    latest = await self._store.get(task_id, context)
                    if latest is None or await self._waits_unanswered(latest):
                        return

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        if self._durable is not None and params.id:
            # Owner-scoped read first: only a caller who may see the task may cancel it.
            stored = await self._store.get(params.id, context)
            running_here = await runs_here(self, params.id)
            if (
                stored is not None
                and stored.task.status.state not in TERMINAL_STATES
                and not running_here
            ):
                await self._durable.cancel(params.id)
        return await super().on_cancel_task(params, context)

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        # A numeric status outside the enum (`?status=10`) otherwise reaches the
        # store, whose TaskState.Name() raises: a 500 for a bad request.
        if params.status not in TaskState.values():
            raise InvalidParamsError(f"unknown task status {params.status}")
        if self._bounds is not None and params.HasField("history_length"):
            self._bounds.check_history_length(params.history_length)
        return await super().on_list_tasks(params, context)

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        if self._bounds is not None and params.HasField("history_length"):
            self._bounds.check_history_length(params.history_length)
        return await super().on_get_task(params, context)
