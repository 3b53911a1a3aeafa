"""What a SendMessage passes before the SDK creates or stores anything: the
complexity limits, the submission rules (server/submission.py) or the answer of
the send it repeats (server/repeats.py), and a place in line from admission
control; what was decided is handed to dispatch (execution/handoff.py). A
blocking send cut short by this server's shutdown is refused as retryable."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TypeVar

from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import Message, SendMessageRequest, Task
from a2a.utils.errors import UnsupportedOperationError

from molecule_runtime.execution.admission import Admission, Ticket
from molecule_runtime.execution.handoff import Handoff, attach, attached
from molecule_runtime.refusals import RetryLater
from molecule_runtime.server.busy import note_refusal
from molecule_runtime.server.complexity import SHAPE_CHECKED, RequestBounds
from molecule_runtime.server.earlier_tasks import Cancel
from molecule_runtime.server.repeats import Repeats, StaleClaim
from molecule_runtime.server.submission import Submission, SubmissionRules
from molecule_runtime.states import is_interrupted, is_terminal
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.claims_table import MessageClaim

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


class SendGate:
    def __init__(
        self,
        store: ObservedTaskStore,
        *,
        rules: SubmissionRules | None,
        admission: Admission | None,
        bounds: RequestBounds | None,
        draining: Callable[[], bool],
        cancel: Cancel,
    ) -> None:
        self.store = store
        self.rules = rules
        self.admission = admission
        self.bounds = bounds
        self.draining = draining
        # How the `interrupt` policy cancels an earlier task (the handler's CancelTask).
        self.cancel = cancel
        self.repeats = Repeats(rules) if rules is not None else None

    def check(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        """Complexity limits (server/complexity.py), before anything is claimed or queued."""
        if self.bounds is not None:
            walk = not context.state.get(SHAPE_CHECKED)
            self.bounds.check_send(params, walk_values=walk)

    async def submit(self, params: SendMessageRequest, context: ServerCallContext) -> Submission:
        """The submission rules before anything is created; their decisions are
        handed over with the request."""
        # Noted first: the rules fill in the ids.
        continues = bool(params.message.context_id or params.message.task_id)
        submission = Submission()
        if self.rules is not None:
            try:
                submission = await self.rules.submit(params, context, self.cancel)
            except RetryLater as exc:
                note_refusal(exc)
                raise
        attach(
            context,
            Handoff(
                continues_context=continues,
                task_id=submission.task_id,
                claim=submission.claim,
                replies_with_message=submission.replies_with_message,
            ),
        )
        return submission

    async def submit_or_repeat(
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
            submission = await self.submit(params, context)
            if submission.repeat_of is None:
                return submission, None
            assert self.repeats is not None
            try:
                return submission, await answer_of(self.repeats, submission.repeat_of)
            except StaleClaim as exc:
                if attempt == 2:
                    raise UnsupportedOperationError(message=str(exc)) from exc
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def entered(self, context: ServerCallContext, submission: Submission) -> Iterator[None]:
        """While the SDK takes the message: its repeats wait for this send's
        answer, and it holds its place in line."""
        answering = (
            self.repeats.answering(submission.claim)
            if self.repeats is not None
            else contextlib.nullcontext()
        )
        with answering, self._admitted(context, submission):
            yield

    @contextlib.contextmanager
    def _admitted(self, context: ServerCallContext, submission: Submission) -> Iterator[None]:
        """A place in line for this message, taken before the SDK creates or
        stores anything (a full line refuses it, see server/busy.py), and given
        back if dispatch did not take it over. A follow-up the policy holds
        back waits in its ticket (`submitted`), or without admission control
        here, before its task exists."""
        ticket: Ticket | None = None
        if self.admission is not None:
            try:
                ticket = self.admission.admit(context, submission.hold)
            except RetryLater as exc:
                note_refusal(exc)
                raise
            attach(context, replace(attached(context) or Handoff(), ticket=ticket))
        try:
            yield
        finally:
            if ticket is not None:
                ticket.release_unclaimed()

    async def held(self, submission: Submission) -> None:
        if submission.hold is not None and self.admission is None:
            await submission.hold

    async def refused(
        self, submission: Submission, params: SendMessageRequest, context: ServerCallContext
    ) -> None:
        """The SDK refused the message: its id is given back unless it was taken
        after all (its task exists, the answer reached the task's history, or
        its Message reply was sent)."""
        claim = submission.claim
        if self.rules is None or claim is None:
            return
        if claim.replies:
            current = await self.rules.message_ids.get(claim.owner, claim.message_id)
            if current is not None and current.reply:
                return
        stored = await self.store.get(claim.task_id, context)
        if stored is not None and (
            claim.task_id != params.message.task_id
            or any(m.message_id == claim.message_id for m in stored.task.history)
        ):
            return
        await submission.refused(self.rules.message_ids)

    def blocking_answer(self, result: Message | Task, params: SendMessageRequest) -> Message | Task:
        """A blocking send ends with the task finished or waiting for the client.
        One cut short by this server's shutdown is refused as retryable instead:
        the client would otherwise take the unfinished task for its answer."""
        if (
            isinstance(result, Task)
            and not params.configuration.return_immediately
            and not (is_terminal(result) or is_interrupted(result))
            and self.draining()
        ):
            error = HandedOver(result.id)
            note_refusal(error)
            raise error
        return result
