"""Answering a repeated message (same sender and `messageId`) with what the
first send was answered with: its task, or the Message of an adapter that
replies with messages. The adapter never runs again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta

from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import Message, SendMessageRequest, Task

from molecule_runtime.server.submission import SubmissionRules
from molecule_runtime.states import INTERRUPTED_STATES, TERMINAL_STATES
from molecule_runtime.store.claims_table import MessageClaim, now_utc
from molecule_runtime.store.owners import acting_for

# A Message reply is not stored until the adapter is done. A claim of another
# process (replica) still without its reply after this long is taken as that
# of a process that died meanwhile, and is taken over.
REPLY_CLAIM_STALE_AFTER = timedelta(minutes=10)


class StaleClaim(Exception):
    """A claim that was never answered: it was given back, submit again."""

    def __init__(self, claim: MessageClaim) -> None:
        super().__init__(
            f"Message {claim.message_id} was accepted but never answered "
            "(the server stopped); send it again."
        )


def settled_for(task: Task, message_id: str) -> bool:
    """The task has answered `message_id`: it ended, or it asks again after it."""
    if task.status.state in TERMINAL_STATES:
        return True
    if task.status.state not in INTERRUPTED_STATES or not task.status.HasField("message"):
        return False
    # The question in the status came after the message (a message is added
    # to history when its turn starts, and that clears the status message).
    return not message_id or any(m.message_id == message_id for m in task.history)


class Repeats:
    def __init__(self, rules: SubmissionRules) -> None:
        self.rules = rules
        # Message-reply claims whose first send is being answered in this process.
        self._answering: set[tuple[str, str]] = set()

    @contextlib.contextmanager
    def answering(self, claim: MessageClaim | None) -> Iterator[None]:
        """While the first send of `claim` is answered here (its repeats wait for it)."""
        if claim is None or not claim.replies:
            yield
            return
        key = (claim.owner, claim.message_id)
        self._answering.add(key)
        try:
            yield
        finally:
            self._answering.discard(key)

    async def first_answer(self, claim: MessageClaim) -> Task | Message:
        """The first send's task (once stored) or its Message; StaleClaim if it never came."""
        if claim.replies:
            return await self._reply(claim)
        task = await self.rules.until_exists(claim.task_id, claim.owner)
        if task is None:
            # The process that claimed it stopped before storing the task:
            # the id is given back and this send takes it anew.
            await self.rules.message_ids.release(claim)
            raise StaleClaim(claim)
        return task

    async def _reply(self, claim: MessageClaim) -> Task | Message:
        message_ids = self.rules.message_ids
        while True:
            current = await message_ids.get(claim.owner, claim.message_id)
            if current is None or current.task_id != claim.task_id:
                raise StaleClaim(claim)  # given back: the first send was refused
            if current.reply:
                return Message.FromString(current.reply)
            # The adapter could not answer with a Message: a Task says why.
            stored = await self.rules.store.get(claim.task_id, acting_for(claim.owner))
            if stored is not None:
                return stored.task
            if not self._may_still_answer(current):
                await message_ids.release(current)
                raise StaleClaim(claim)
            await self.rules.watch.changed(claim.task_id)

    def _may_still_answer(self, claim: MessageClaim) -> bool:
        if (claim.owner, claim.message_id) in self._answering:
            return True
        # In memory only this process answers; in a database, another replica may.
        return self.rules.message_ids.shared and (
            claim.created_at > now_utc() - REPLY_CLAIM_STALE_AFTER
        )

    async def result(
        self, claim: MessageClaim, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        """What the first send returned: its Message, or its task once it answered."""
        answer = await self.first_answer(claim)
        if isinstance(answer, Message) or params.configuration.return_immediately:
            return answer
        task = answer
        while not settled_for(task, claim.message_id):
            await self.rules.watch.changed(claim.task_id)
            stored = await self.rules.store.get(claim.task_id, context)
            if stored is None:
                break
            task = stored.task
        return task
