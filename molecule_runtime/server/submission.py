"""Submission rules: what a SendMessage means, decided before anything runs.

1. **Exactly once.** A message is identified by its sender (the principal's
   owner scope) and its `messageId`. The first send claims the id
   (store/message_ids.py, a unique key shared by every replica); a repeat —
   concurrent, on another replica, after a restart — gets the task the first
   one was taken into and never runs the adapter again. The same id on a
   different message (other text, other conversation) is invalid params.
2. **Conversations (A2A 1.0).** A message with a `taskId` and no `contextId`
   belongs to the task's context; a `contextId` contradicting the task's is
   invalid params, and the task is not touched.
3. **Concurrent messages in one conversation** (MOLECULE_CONCURRENT_MESSAGES):
   while an earlier task of the context runs (submitted or working), a new
   message is refused (`reject`), waits `submitted` until that task ends and
   then runs with its answer in history (`enqueue`), cancels it and then runs
   (`interrupt`), or runs at once (`parallel`). A message naming a running task
   is a new message of that task's conversation under the same policy.

The decisions read the shared store, so they are the same in direct and
durable mode and on every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import resolve_user_scope
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    Message,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    A2AError,
    InvalidParamsError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from molecule_runtime.sdk_seam import version_number
from molecule_runtime.states import TERMINAL_STATES
from molecule_runtime.store import ObservedTaskStore, TaskEventLog
from molecule_runtime.store.message_ids import MessageClaim, MessageIds, now_utc
from molecule_runtime.store.owners import acting_for

log = logging.getLogger(__name__)

# Call-context state key: the id the SDK gives the new task (claimed beforehand).
ASSIGNED_TASK_ID = "molecule.assigned_task_id"

# A task that runs or waits for a slot: it takes no message now.
RUNNING_STATES = frozenset({TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING})
INTERRUPTED_STATES = frozenset(
    {TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED}
)

# How often a wait for a task of another replica re-reads the store (writes
# made in this process wake the waiters at once).
POLL_INTERVAL = 0.25
# A claimed message's task is created moments after the claim; a claim whose
# task is still missing after this long was made by a process that died in
# between, and is taken over.
PENDING_CLAIM_TIMEOUT = 15.0
# Claims this recent may belong to tasks not stored yet (same conversation).
PENDING_CLAIM_WINDOW = timedelta(seconds=60)


class ConcurrentMessages(StrEnum):
    REJECT = "reject"
    ENQUEUE = "enqueue"
    INTERRUPT = "interrupt"
    PARALLEL = "parallel"


def message_digest(message: Message) -> str:
    """What a repeat must match: role, the task it names and its parts."""
    digest = hashlib.sha256()
    digest.update(str(message.role).encode())
    digest.update(b"\0" + message.task_id.encode() + b"\0")
    for part in message.parts:
        digest.update(part.SerializeToString(deterministic=True))
        digest.update(b"\0")
    return digest.hexdigest()


def settled_for(task: Task, message_id: str) -> bool:
    """The task has answered `message_id`: it ended, or it asks again after it."""
    if task.status.state in TERMINAL_STATES:
        return True
    if task.status.state not in INTERRUPTED_STATES or not task.status.HasField("message"):
        return False
    # The question in the status came after the message (a message is added
    # to history when its turn starts, and that clears the status message).
    return not message_id or any(m.message_id == message_id for m in task.history)


def _settling_event(event: object) -> bool:
    if isinstance(event, Message):
        return True
    if not isinstance(event, Task | TaskStatusUpdateEvent):
        return False
    state = event.status.state
    return state in TERMINAL_STATES or (
        state in INTERRUPTED_STATES and event.status.HasField("message")
    )


class StaleClaim(Exception):
    """A claim whose task was never created: it was given back, submit again."""

    def __init__(self, claim: MessageClaim) -> None:
        super().__init__(
            f"Message {claim.message_id} was accepted but its task was never "
            "created (the server stopped); send it again."
        )


@dataclass
class Submission:
    """What the handler does with one message."""

    claim: MessageClaim | None = None  # taken now: given back if refused before its task exists
    repeat_of: MessageClaim | None = None  # a repeat: answer with this claim's task
    hold: asyncio.Future[None] | None = None  # the task may start once this is done

    async def refused(self, message_ids: MessageIds) -> None:
        """The message was refused before its task was created."""
        if self.hold is not None:
            self.hold.cancel()
        if self.claim is not None:
            with contextlib.suppress(Exception):
                await message_ids.release(self.claim)


class SubmissionRules:
    def __init__(
        self,
        store: ObservedTaskStore,
        message_ids: MessageIds,
        policy: ConcurrentMessages | str = ConcurrentMessages.ENQUEUE,
        *,
        event_log: TaskEventLog | None = None,
        cancel: Callable[[str, ServerCallContext], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.message_ids = message_ids
        self.policy = ConcurrentMessages(policy)
        self._event_log = event_log
        # How `interrupt` cancels a task (the request handler's CancelTask).
        self.cancel = cancel
        self._watchers: dict[str, set[asyncio.Event]] = {}
        store.observe(self._wake)

    # --- deciding -----------------------------------------------------------

    async def submit(self, params: SendMessageRequest, context: ServerCallContext) -> Submission:
        """Apply the rules to `params` (completing its ids); raise when it is refused."""
        message = params.message
        owner = resolve_user_scope(context)
        digest = message_digest(message)
        sent_context = message.context_id
        if message.message_id:
            earlier = await self.message_ids.get(owner, message.message_id)
            if earlier is not None:
                return self._repeat(earlier, message, digest, sent_context)

        named: Task | None = None
        if message.task_id:
            stored = await self.store.get(message.task_id, context)
            if stored is None:
                raise TaskNotFoundError(message=f"Task {message.task_id} was not found")
            named = stored.task
            if sent_context and sent_context != named.context_id:
                raise InvalidParamsError(
                    message=f"contextId {sent_context} does not match context "
                    f"{named.context_id} of task {named.id}; leave contextId out to continue "
                    "the task's conversation"
                )
            if named.status.state in TERMINAL_STATES:
                raise UnsupportedOperationError(
                    message=f"Task {named.id} is in terminal state: "
                    f"{TaskState.Name(named.status.state)}; send a new message (without "
                    "taskId) in the same contextId to continue the conversation"
                )
            message.context_id = named.context_id

        answer = named is not None and named.status.state not in RUNNING_STATES
        earlier_running: list[str] = []
        if named is not None and not answer:
            # A message to a running task is a new message of its conversation.
            earlier_running.append(named.id)
            message.task_id = ""
        if not message.context_id:
            message.context_id = str(uuid.uuid4())
        task_id = message.task_id or str(uuid.uuid4())
        if not answer:
            context.state[ASSIGNED_TASK_ID] = task_id

        claim: MessageClaim | None = None
        if message.message_id:
            claim = MessageClaim(
                owner=owner,
                message_id=message.message_id,
                task_id=task_id,
                context_id=message.context_id,
                digest=digest,
                created_at=now_utc(),
            )
            earlier = await self.message_ids.claim(claim)
            if earlier is not None:
                return self._repeat(earlier, message, digest, sent_context)
        submission = Submission(claim=claim)
        if answer or self.policy is ConcurrentMessages.PARALLEL:
            return submission
        try:
            # A new conversation (no contextId, no taskId) has no earlier task.
            if named is not None or sent_context:
                earlier_running += await self._running_in(owner, message.context_id, task_id)
            earlier_running = list(dict.fromkeys(earlier_running))
            if earlier_running:
                submission.hold = self._apply_policy(earlier_running, owner, context)
        except BaseException:
            await submission.refused(self.message_ids)
            raise
        return submission

    def _repeat(
        self, earlier: MessageClaim, message: Message, digest: str, sent_context: str
    ) -> Submission:
        if earlier.digest != digest or (sent_context and sent_context != earlier.context_id):
            raise InvalidParamsError(
                message=f"messageId {earlier.message_id} already identifies another message "
                f"(task {earlier.task_id}, context {earlier.context_id}); a repeat must be "
                "the same message, and a new message needs a new messageId"
            )
        return Submission(repeat_of=earlier)

    async def _running_in(self, owner: str, context_id: str, this_task: str) -> list[str]:
        """Tasks of the conversation that run now, or were claimed but not stored yet."""
        as_owner = acting_for(owner)
        running: list[tuple[float, str]] = []
        for state in RUNNING_STATES:
            page = await self.store.list(
                ListTasksRequest(context_id=context_id, status=state), as_owner
            )
            running += [
                (t.status.timestamp.ToNanoseconds(), t.id) for t in page.tasks if t.id != this_task
            ]
        ids = [task_id for _, task_id in sorted(running)]
        claims = await self.message_ids.recent_in_context(
            owner, context_id, now_utc() - PENDING_CLAIM_WINDOW
        )
        for claim in sorted(claims, key=lambda c: c.created_at):
            if claim.task_id == this_task or claim.task_id in ids:
                continue
            if await self.store.get(claim.task_id, as_owner) is None:
                ids.append(claim.task_id)
        return ids

    def _apply_policy(
        self, earlier: list[str], owner: str, context: ServerCallContext
    ) -> asyncio.Future[None]:
        if self.policy is ConcurrentMessages.REJECT:
            raise UnsupportedOperationError(
                message=f"Task {earlier[0]} of this conversation is still running: a new "
                "message is taken only when it has ended or asks for input "
                "(MOLECULE_CONCURRENT_MESSAGES=reject). Wait for it to finish (or cancel it), "
                "then send the message again."
            )
        if self.policy is ConcurrentMessages.INTERRUPT:
            return asyncio.ensure_future(self._interrupt(earlier, owner, context))
        return asyncio.ensure_future(self._until_stopped(earlier, owner))

    async def _interrupt(self, earlier: list[str], owner: str, context: ServerCallContext) -> None:
        for task_id in earlier:
            await self._until_exists(task_id, owner)
            if self.cancel is not None:
                try:
                    await self.cancel(task_id, context)
                except A2AError as exc:
                    # It ended (or was canceled) meanwhile: nothing to interrupt.
                    log.debug("interrupting task %s: %s", task_id, exc)
                except Exception:
                    log.exception("could not interrupt task %s", task_id)
        await self._until_stopped(earlier, owner)

    # --- waiting ------------------------------------------------------------

    def _wake(self, task_id: str, _event: object = None, _version: object = None) -> None:
        for waiter in self._watchers.get(task_id, ()):
            waiter.set()

    async def _changed(self, task_id: str, timeout: float = POLL_INTERVAL) -> None:
        """Return after a write to `task_id` in this process, or after `timeout`."""
        waiter = asyncio.Event()
        self._watchers.setdefault(task_id, set()).add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout)
        finally:
            waiters = self._watchers.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._watchers[task_id]

    async def _until_exists(self, task_id: str, owner: str) -> Task | None:
        deadline = time.monotonic() + PENDING_CLAIM_TIMEOUT
        while True:
            stored = await self.store.get(task_id, acting_for(owner))
            if stored is not None:
                return stored.task
            if time.monotonic() >= deadline:
                return None
            await self._changed(task_id)

    async def _until_stopped(self, task_ids: list[str], owner: str) -> None:
        """Until none of `task_ids` runs (ended or asking for input)."""
        try:
            for task_id in task_ids:
                task = await self._until_exists(task_id, owner)
                while task is not None and task.status.state in RUNNING_STATES:
                    await self._changed(task_id)
                    stored = await self.store.get(task_id, acting_for(owner))
                    task = stored.task if stored is not None else None
        except asyncio.CancelledError:
            raise
        except Exception:
            # The waiting task then runs now rather than never.
            log.exception("waiting for the earlier tasks %s failed", task_ids)

    # --- answering a repeat -------------------------------------------------

    async def _claimed_task(self, claim: MessageClaim) -> Task:
        task = await self._until_exists(claim.task_id, claim.owner)
        if task is None:
            # The process that claimed it stopped before storing the task:
            # the id is given back and this send takes it anew.
            await self.message_ids.release(claim)
            raise StaleClaim(claim)
        return task

    async def repeated_result(
        self, claim: MessageClaim, params: SendMessageRequest, context: ServerCallContext
    ) -> Task:
        """The task of an earlier send of this message, as the first send returns it."""
        task = await self._claimed_task(claim)
        if params.configuration.return_immediately:
            return task
        while not settled_for(task, claim.message_id):
            await self._changed(claim.task_id)
            stored = await self.store.get(claim.task_id, context)
            if stored is None:
                break
            task = stored.task
        return task

    async def repeated_stream(
        self,
        claim: MessageClaim,
        context: ServerCallContext,
        on_offset: Callable[[int | None], None],
    ) -> AsyncIterator[object]:
        """The live stream of the task of an earlier send: its snapshot, then its
        events until it answered this message (from the shared event log)."""
        task = await self._claimed_task(claim)
        stored = await self.store.get(claim.task_id, context)
        version = version_number(stored.version) if stored is not None else 0
        on_offset(version or None)
        yield task
        if settled_for(task, claim.message_id):
            return
        if self._event_log is None:
            # Memory store (one process): snapshots as they change.
            while True:
                await self._changed(claim.task_id)
                stored = await self.store.get(claim.task_id, context)
                if stored is None:
                    return
                number = version_number(stored.version)
                if number == version:
                    continue
                version = number
                on_offset(None)
                yield stored.task
                if settled_for(stored.task, claim.message_id):
                    return
        follow = self._event_log.follow(claim.task_id, version)
        try:
            async for offset, event in follow:
                on_offset(offset)
                yield event
                if _settling_event(event):
                    return
        finally:
            await follow.aclose()  # type: ignore[attr-defined]
