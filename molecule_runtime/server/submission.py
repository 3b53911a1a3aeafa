"""Submission rules: what a SendMessage means, decided before anything runs.

1. **Exactly once.** A message is identified by its sender (the principal's
   owner scope) and its `messageId`. The first send claims the id
   (store/message_ids.py, a unique key shared by every replica); a repeat —
   concurrent, on another replica, after a restart — gets what the first one
   was answered with (server/repeats.py): its task, or the Message of an
   adapter that replies with messages, and never runs the adapter again. The
   same id on a different message (other text, other conversation) is invalid
   params. With deduplication off (MOLECULE_MESSAGE_ID_DEDUP=false) every send
   is a new message: its claim gets a key of its own, so the ordering below
   still sees it, and nothing is recognised as a repeat.
2. **Conversations (A2A 1.0).** A message with a `taskId` and no `contextId`
   belongs to the task's context; a `contextId` contradicting the task's is
   invalid params, and the task is not touched. An answer to a durable task is
   refused (its id not taken) while it cannot reach the task's workflow.
3. **Concurrent messages in one conversation** (MOLECULE_CONCURRENT_MESSAGES):
   while an earlier task of the context runs (submitted or working), a new
   message is refused (`reject`), waits `submitted` until that task ends and
   then runs with its answer in history (`enqueue`), cancels it and then runs
   (`interrupt`), or runs at once (`parallel`). A message naming a running task
   is a new message of that task's conversation under the same policy. A
   message answered by a Message (no task) is not a running task. Messages
   sent at once are taken in claim order: each waits for (or interrupts) only
   the ones before it, so none waits for a later one that waits for it.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import resolve_user_scope
from a2a.types.a2a_pb2 import ListTasksRequest, Message, SendMessageRequest, Task, TaskState
from a2a.utils.errors import (
    A2AError,
    InvalidParamsError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.execution.admission import RetryLater
from molecule_runtime.execution.inputs import build_task_input
from molecule_runtime.execution.parts import has_usable_part
from molecule_runtime.keyed_lock import KeyedLock
from molecule_runtime.server.task_watch import TaskWatch
from molecule_runtime.states import RUNNING_STATES, TERMINAL_STATES
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.message_ids import MessageClaim, MessageIds, now_utc
from molecule_runtime.store.owners import acting_for
from molecule_runtime.vocabulary import ConcurrentMessages, Meta, Mode

log = logging.getLogger(__name__)

# Call-context state keys: the id the SDK gives the new task (claimed
# beforehand), the claim of the message being answered, and whether the
# adapter answers it with a Message (decided here, once).
ASSIGNED_TASK_ID = "molecule.assigned_task_id"
MESSAGE_CLAIM = "molecule.message_claim"
REPLIES_WITH_MESSAGE = "molecule.replies_with_message"

# A task that runs or waits for a slot: it takes no message now.

# A claimed message's task is created moments after the claim; a claim whose
# task is still missing after this long was made by a process that died in
# between, and is taken over.
PENDING_CLAIM_TIMEOUT = 15.0
# Claims this recent may belong to tasks not stored yet (same conversation).
PENDING_CLAIM_WINDOW = timedelta(seconds=60)


class TemporalUnavailable(RetryLater):
    """An answer to a durable task while its workflow cannot be reached."""

    reason = "TEMPORAL_UNAVAILABLE"

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"Task {task_id} waits on Temporal, which is unreachable right now: the answer "
            f"was not taken (nothing changed); send it again in {self.retry_after} seconds."
        )


def reply_decision(adapter: BaseAdapter) -> bool | Callable[[TaskInput], bool]:
    """The adapter's `replies_with_message` when it decides for every message,
    else its per-message `replies_with_message_to`."""
    if type(adapter).replies_with_message_to is BaseAdapter.replies_with_message_to:
        return adapter.replies_with_message
    return adapter.replies_with_message_to


def _order(claim: MessageClaim) -> tuple[datetime, str]:
    """Arrival order of claimed messages: claim time, then task id for a tie."""
    return (claim.created_at, claim.task_id)


def message_digest(message: Message) -> str:
    """What a repeat must match: role, the task it names and its parts."""
    digest = hashlib.sha256()
    digest.update(str(message.role).encode())
    digest.update(b"\0" + message.task_id.encode() + b"\0")
    for part in message.parts:
        digest.update(part.SerializeToString(deterministic=True))
        digest.update(b"\0")
    return digest.hexdigest()


class _Turns:
    """One message of a conversation at a time claims its id and reads which
    earlier tasks it waits for, in this process: claims stamped in one order
    could otherwise be stored in another, and a message that read before an
    earlier-stamped claim was stored would not wait for it (nor it for this
    one). Across replicas the claim order alone still rules out a cycle."""

    def __init__(self) -> None:
        self._locks: KeyedLock[tuple[str, str]] = KeyedLock()

    def deciding(self, owner: str, context_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._locks.holding((owner, context_id))


@dataclass
class Submission:
    """What the handler does with one message."""

    claim: MessageClaim | None = None  # taken now: given back if refused before its task exists
    repeat_of: MessageClaim | None = None  # a repeat: answer as this claim was answered
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
        watch: TaskWatch | None = None,
        replies_with_message: bool | Callable[[TaskInput], bool] = False,
        resumable: Callable[[], bool] | None = None,
        cancel: Callable[[str, ServerCallContext], Awaitable[object]] | None = None,
        dedup: bool = True,
    ) -> None:
        self.store = store
        self.message_ids = message_ids
        self.policy = ConcurrentMessages(policy)
        self.watch = watch or TaskWatch(store)
        # Whether the adapter answers a new message with a Message, not a task:
        # for every message, or asked per message (BaseAdapter.replies_with_message_to).
        self.replies_with_message = replies_with_message
        # Whether a durable task's workflow can be reached now (None: no durable mode).
        self.resumable = resumable
        # How `interrupt` cancels a task (the request handler's CancelTask).
        self.cancel = cancel
        # Exactly once by (sender, messageId); off for clients that reuse ids.
        self.dedup = dedup
        self._turns = _Turns()

    async def submit(self, params: SendMessageRequest, context: ServerCallContext) -> Submission:
        """Apply the rules to `params` (completing its ids); raise when it is refused."""
        message = params.message
        owner = resolve_user_scope(context)
        digest = message_digest(message)
        sent_context = message.context_id
        if self.dedup and message.message_id and message.task_id:
            # A repeat of an answer is recognised before its task's state is
            # checked; a new message's repeat shows when its claim below fails.
            earlier = await self.message_ids.get(owner, message.message_id)
            if earlier is not None:
                return self._repeat(earlier, digest, sent_context)

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
            if not self.dedup and any(m.message_id == message.message_id for m in named.history):
                # The SDK keeps one message per id in a task's history (a second
                # one would be dropped, and a durable turn would read the first);
                # a reused id is stored with a suffix of its own.
                message.message_id = f"{message.message_id}~{uuid.uuid4().hex[:12]}"

        answer = named is not None and named.status.state not in RUNNING_STATES
        if answer and named is not None:
            self._check_resumable(named)
        earlier_running: list[str] = []
        if named is not None and not answer:
            # A message to a running task is a new message of its conversation.
            earlier_running.append(named.id)
            message.task_id = ""
        if not message.context_id:
            message.context_id = str(uuid.uuid4())
        task_id = message.task_id
        if not task_id:
            task_id = str(uuid.uuid4())
            self.store.expect_new(task_id)
        if not answer:
            context.state[ASSIGNED_TASK_ID] = task_id
        replies = not answer and has_usable_part(message) and self._replies(message, task_id)
        if not answer:
            context.state[REPLIES_WITH_MESSAGE] = replies

        # A Message reply is no turn of the conversation: it waits for nobody.
        # A new conversation (no contextId, no taskId) has no earlier task.
        ordered = not (answer or replies or self.policy is ConcurrentMessages.PARALLEL) and (
            named is not None or bool(sent_context)
        )
        turn = self._turns.deciding(owner, message.context_id) if ordered else None
        async with turn or contextlib.nullcontext():
            claim: MessageClaim | None = None
            if message.message_id:
                claim = MessageClaim(
                    owner=owner,
                    message_id=self._claim_key(message.message_id),
                    task_id=task_id,
                    context_id=message.context_id,
                    digest=digest,
                    created_at=now_utc(),
                    reply=b"" if replies else None,
                )
                earlier = await self.message_ids.claim(claim)
                if earlier is not None:
                    return self._repeat(earlier, digest, sent_context)
                context.state[MESSAGE_CLAIM] = claim
            submission = Submission(claim=claim)
            if not ordered:
                return submission
            try:
                earlier_running += await self._running_in(owner, message.context_id, task_id, claim)
                earlier_running = list(dict.fromkeys(earlier_running))
                if earlier_running:
                    submission.hold = self._apply_policy(earlier_running, owner, context)
            except BaseException:
                await submission.refused(self.message_ids)
                raise
        return submission

    def _replies(self, message: Message, task_id: str) -> bool:
        decide = self.replies_with_message
        if isinstance(decide, bool):
            return decide
        return bool(
            decide(
                build_task_input(
                    message,
                    task_id=task_id,
                    context_id=message.context_id,
                    current_task=None,
                    history=[],
                    request_metadata={},
                )
            )
        )

    def _claim_key(self, message_id: str) -> str:
        """The key a message is claimed under: its id, or (deduplication off) a
        key no other send shares, so that no send is taken for a repeat."""
        return message_id if self.dedup else f"{message_id} {uuid.uuid4()}"

    def _check_resumable(self, task: Task) -> None:
        """An answer to a durable task is taken only when its workflow can be told."""
        if dict(task.metadata).get(Meta.MODE) != Mode.DURABLE:
            return
        if self.resumable is None:
            raise UnsupportedOperationError(
                message=f"Task {task.id} waits on Temporal, but this server runs without "
                "durable mode (TEMPORAL_HOST); send the answer to a durable server."
            )
        if not self.resumable():
            raise TemporalUnavailable(task.id)

    def _repeat(self, earlier: MessageClaim, digest: str, sent_context: str) -> Submission:
        if earlier.digest != digest or (sent_context and sent_context != earlier.context_id):
            raise InvalidParamsError(
                message=f"messageId {earlier.message_id} already identifies another message "
                f"(task {earlier.task_id}, context {earlier.context_id}); a repeat must be "
                "the same message, and a new message needs a new messageId"
            )
        return Submission(repeat_of=earlier)

    async def _running_in(
        self, owner: str, context_id: str, this_task: str, this_claim: MessageClaim | None
    ) -> list[str]:
        """Tasks of the conversation sent before this message that run now, or
        were claimed but not stored yet.

        Messages sent at once are ordered by their claims (`_order`, the same
        on every replica). Each waits only for the ones before it: a later one
        still `submitted` may itself wait for this one, and two messages
        waiting for each other would never start."""
        as_owner = acting_for(owner)
        since = now_utc() - PENDING_CLAIM_WINDOW
        # Claims first: a task stored meanwhile is then in the list below.
        claims = await self.message_ids.recent_in_context(owner, context_id, since)
        running: list[tuple[int, str]] = []
        submitted: set[str] = set()
        for state in RUNNING_STATES:
            page = await self.store.list(
                ListTasksRequest(context_id=context_id, status=state), as_owner
            )
            for task in page.tasks:
                if task.id == this_task:
                    continue
                running.append((task.status.timestamp.ToNanoseconds(), task.id))
                if state == TaskState.TASK_STATE_SUBMITTED:
                    submitted.add(task.id)
        ours = _order(this_claim) if this_claim is not None else None
        first_claimed: dict[str, tuple[datetime, str]] = {}
        if ours is not None and submitted:
            for claim in await self.message_ids.recent_in_context(
                owner, context_id, since, include_stored=True
            ):
                key = _order(claim)
                first_claimed[claim.task_id] = min(first_claimed.get(claim.task_id, key), key)

        def before_this(task_id: str) -> bool:
            # A task claimed before the window (or not claimed here) came first.
            key = first_claimed.get(task_id)
            return ours is None or key is None or key < ours

        ids = [
            task_id
            for _, task_id in sorted(running)
            if task_id not in submitted or before_this(task_id)
        ]
        for claim in sorted(claims, key=_order):
            if claim.task_id == this_task or claim.task_id in ids:
                continue
            if ours is not None and _order(claim) > ours:
                continue
            stored = await self.store.get(claim.task_id, as_owner)
            if stored is None or stored.task.status.state in RUNNING_STATES:
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
            await self.until_exists(task_id, owner)
            if self.cancel is not None:
                try:
                    await self.cancel(task_id, context)
                except A2AError as exc:
                    # It ended (or was canceled) meanwhile: nothing to interrupt.
                    log.debug("interrupting task %s: %s", task_id, exc)
                except Exception:
                    log.exception("could not interrupt task %s", task_id)
        await self._until_stopped(earlier, owner)

    async def until_exists(self, task_id: str, owner: str) -> Task | None:
        """The task of a claim, once stored; None if it is not after PENDING_CLAIM_TIMEOUT."""
        deadline = time.monotonic() + PENDING_CLAIM_TIMEOUT
        while True:
            stored = await self.store.get(task_id, acting_for(owner))
            if stored is not None:
                return stored.task
            if time.monotonic() >= deadline:
                return None
            await self.watch.changed(task_id)

    async def _until_stopped(self, task_ids: list[str], owner: str) -> None:
        """Until none of `task_ids` runs (ended or asking for input)."""
        try:
            for task_id in task_ids:
                task = await self.until_exists(task_id, owner)
                while task is not None and task.status.state in RUNNING_STATES:
                    await self.watch.changed(task_id)
                    stored = await self.store.get(task_id, acting_for(owner))
                    task = stored.task if stored is not None else None
                # A read here may see its last write before it is committed; the
                # next turn's history is read from the database.
                await self.store.wait_stored(task_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The waiting task then runs now rather than never.
            log.exception("waiting for the earlier tasks %s failed", task_ids)
