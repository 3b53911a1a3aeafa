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
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import resolve_user_scope
from a2a.types.a2a_pb2 import Message, SendMessageRequest, Task, TaskState
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError, UnsupportedOperationError

from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.execution.inputs import build_task_input
from molecule_runtime.execution.parts import has_usable_part
from molecule_runtime.keyed_lock import KeyedLock
from molecule_runtime.refusals import RetryLater
from molecule_runtime.server.earlier_tasks import Cancel, EarlierTasks
from molecule_runtime.server.task_watch import TaskWatch
from molecule_runtime.states import RUNNING_STATES, TERMINAL_STATES
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.claims_table import MessageClaim, now_utc
from molecule_runtime.store.message_ids import MessageIds
from molecule_runtime.vocabulary import ConcurrentMessages, Meta, Mode


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


def message_digest(message: Message) -> str:
    """What a repeat must match: role, the task it names and its parts."""
    digest = hashlib.sha256()
    digest.update(str(message.role).encode())
    digest.update(b"\0" + message.task_id.encode() + b"\0")
    for part in message.parts:
        digest.update(part.SerializeToString(deterministic=True))
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class Submission:
    """What the handler does with one message."""

    claim: MessageClaim | None = None  # taken now: given back if refused before its task exists
    repeat_of: MessageClaim | None = None  # a repeat: answer as this claim was answered
    hold: asyncio.Future[None] | None = None  # the task may start once this is done
    task_id: str | None = None  # the id claimed for a new task (None: an answer)
    # Whether the adapter answers a new task's message with a Message (None: an answer).
    replies_with_message: bool | None = None

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
        # Exactly once by (sender, messageId); off for clients that reuse ids.
        self.dedup = dedup
        # One message of a conversation at a time claims its id and reads which
        # earlier tasks it waits for, in this process: claims stamped in one order
        # could otherwise be stored in another, and a message that read before an
        # earlier-stamped claim was stored would not wait for it (nor it for this
        # one). Across replicas the claim order alone still rules out a cycle.
        self._turns: KeyedLock[tuple[str, str]] = KeyedLock()
        self.earlier = EarlierTasks(store, message_ids, self.watch)

    async def submit(
        self, params: SendMessageRequest, context: ServerCallContext, cancel: Cancel | None = None
    ) -> Submission:
        """Apply the rules to `params` (completing its ids); raise when it is refused.
        `cancel` is how the `interrupt` policy cancels an earlier task."""
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
        replies = not answer and has_usable_part(message) and self._replies(message, task_id)

        # A Message reply is no turn of the conversation: it waits for nobody.
        # A new conversation (no contextId, no taskId) has no earlier task.
        ordered = not (answer or replies or self.policy is ConcurrentMessages.PARALLEL) and (
            named is not None or bool(sent_context)
        )
        turn = self._turns.holding((owner, message.context_id)) if ordered else None
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
            submission = Submission(
                claim=claim,
                task_id=None if answer else task_id,
                replies_with_message=None if answer else replies,
            )
            if not ordered:
                return submission
            try:
                earlier_running += await self.earlier.running_in(
                    owner, message.context_id, task_id, claim
                )
                earlier_running = list(dict.fromkeys(earlier_running))
                if earlier_running:
                    submission.hold = self._apply_policy(earlier_running, owner, context, cancel)
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

    def _apply_policy(
        self, earlier: list[str], owner: str, context: ServerCallContext, cancel: Cancel | None
    ) -> asyncio.Future[None]:
        if self.policy is ConcurrentMessages.REJECT:
            raise UnsupportedOperationError(
                message=f"Task {earlier[0]} of this conversation is still running: a new "
                "message is taken only when it has ended or asks for input "
                "(MOLECULE_CONCURRENT_MESSAGES=reject). Wait for it to finish (or cancel it), "
                "then send the message again."
            )
        if self.policy is ConcurrentMessages.INTERRUPT:
            return asyncio.ensure_future(self.earlier.interrupt(earlier, owner, context, cancel))
        return asyncio.ensure_future(self.earlier.until_stopped(earlier, owner))

    async def until_exists(self, task_id: str, owner: str) -> Task | None:
        """The task of a claim, once stored (server/earlier_tasks.py)."""
        return await self.earlier.until_exists(task_id, owner)
