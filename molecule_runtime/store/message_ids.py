"""Which task each message (sender, messageId) was taken into: the idempotency key.

A message is claimed before anything runs. The claim is a row with a unique key
(owner, message id), so of two concurrent sends of one message — on one
replica or on two sharing the database — exactly one inserts it; the other
reads the winner's row and is answered with the winner's task. The in-memory
store keeps the same map per process.

Claims made while one is being written wait and are written together, in one
transaction (insert what is free, then read who holds each id): a burst of new
tasks costs a few transactions instead of one each, which on a busy process
were the queue every new task waited in.

A message answered with a Message rather than a task (an adapter that
`replies_with_message`) is claimed as such: its row keeps the reply, so a
repeat gets the same Message, and it is never a task of its conversation.

The claim and its table are store/claims_table.py.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import replace
from datetime import datetime, timedelta

from a2a.server.models import TaskModel
from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.store.claims_table import (
    INSERT_FREE,
    MESSAGE_IDS,
    MessageClaim,
    claim_row,
    create_table,
    now_utc,
)
from molecule_runtime.store.health import StoreHealth, refusing, until_stored

_TASKS = TaskModel.__table__
# How long a send waits for its claim while the store refuses writes; then it
# is refused (503, send it again), while the claim is still written.
CLAIM_PATIENCE = 10.0
# Claims written in one transaction at most (SQLite binds at most 32766 values).
MAX_BATCH = 500


class MessageIds:
    """The claims, in the database (`engine`) or in this process's memory."""

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        retention: float = 86400.0,
        health: StoreHealth | None = None,
    ) -> None:
        self._engine = engine
        self._health = health or StoreHealth()
        self._retention = retention
        self._memory: dict[tuple[str, str], MessageClaim] = {}
        self._memory_pruned = time.monotonic()
        # The stores open SQLite and PostgreSQL only (store/factory.py).
        self._insert_free = INSERT_FREE[engine.dialect.name] if engine is not None else None
        self._waiting: list[tuple[MessageClaim, asyncio.Future[MessageClaim | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """Kept in a database that other replicas may share."""
        return self._engine is not None

    async def initialize(self) -> None:
        if self._engine is not None:
            async with self._engine.begin() as conn:
                await conn.run_sync(create_table)

    async def claim(self, claim: MessageClaim) -> MessageClaim | None:
        """Take the message id for `claim`: None when taken now, else the earlier claim."""
        if self._engine is None:
            self._prune_memory()
            key = (claim.owner, claim.message_id)
            earlier = self._memory.get(key)
            if earlier is not None and not self._expired(earlier):
                return earlier
            self._memory[key] = claim
            return None
        if not self._health.available:
            # Nothing could be stored for the message now: refused, to be sent again.
            self._refuse()
        future: asyncio.Future[MessageClaim | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((claim, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="message-id-claims")
        deadline = time.monotonic() + CLAIM_PATIENCE
        try:
            while not future.done() and time.monotonic() < deadline:
                await asyncio.wait({future}, timeout=CLAIM_PATIENCE / 20)
                if not self._health.available:
                    break  # the store went away meanwhile: refuse now, not at the deadline
        except asyncio.CancelledError:
            future.cancel()  # the writer gives the id back once it is written
            raise
        if not future.done():
            # The store went away while the claim was written. The writer keeps
            # trying (a claim written after all is given back: nobody waits for it).
            future.cancel()
            self._refuse()
        held = future.result()
        if held is not None and held.task_id == claim.task_id:
            return None
        if held is None:
            # Released (or pruned) between the insert and the read: try once more.
            return await self.claim(claim)
        return held

    def _refuse(self) -> None:
        with refusing(self._health):
            raise self._health.unavailable()

    async def _write_waiting(self) -> None:
        """Write the claims that wait, a batch per transaction, until none is left."""
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                holders = await until_stored(
                    functools.partial(self._insert_batch, [claim for claim, _ in batch]),
                    self._health,
                    waiting=len(batch),
                )
            except asyncio.CancelledError:
                # Shutting down: nobody will write what waits.
                for _, future in batch + self._waiting:
                    future.cancel()
                self._waiting = []
                raise
            except Exception as exc:
                # Not the database's weather (is_transient): these claims fail.
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for claim, future in batch:
                held = holders.get((claim.owner, claim.message_id))
                if not future.done():
                    future.set_result(held)
                elif held is not None and held.task_id == claim.task_id:
                    # Its sender is gone (cancelled while it was written): nothing will
                    # be created for it, so the id is given back at once.
                    await until_stored(functools.partial(self.release, claim), self._health)

    async def _insert_batch(
        self, claims: list[MessageClaim]
    ) -> dict[tuple[str, str], MessageClaim]:
        """Insert the claims whose ids are free; who holds each id afterwards."""
        assert self._engine is not None and self._insert_free is not None
        c = MESSAGE_IDS.c
        async with self._engine.begin() as conn:
            await conn.execute(self._insert_free, [claim_row(claim) for claim in claims])
            rows = (
                await conn.execute(
                    select(MESSAGE_IDS).where(
                        and_(
                            c.owner.in_({claim.owner for claim in claims}),
                            c.message_id.in_({claim.message_id for claim in claims}),
                        )
                    )
                )
            ).all()
        return {(row.owner, row.message_id): MessageClaim(**row._mapping) for row in rows}

    async def get(self, owner: str, message_id: str) -> MessageClaim | None:
        if self._engine is None:
            return self._memory.get((owner, message_id))
        with refusing(self._health):
            return await self._get(owner, message_id)

    async def _get(self, owner: str, message_id: str) -> MessageClaim | None:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(MESSAGE_IDS).where(
                        and_(MESSAGE_IDS.c.owner == owner, MESSAGE_IDS.c.message_id == message_id)
                    )
                )
            ).first()
        return MessageClaim(**row._mapping) if row is not None else None

    async def release(self, claim: MessageClaim) -> None:
        """Give the id back: the message was refused before its task was created."""
        if self._engine is None:
            if self._memory.get((claim.owner, claim.message_id)) == claim:
                del self._memory[(claim.owner, claim.message_id)]
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(MESSAGE_IDS).where(
                    and_(
                        MESSAGE_IDS.c.owner == claim.owner,
                        MESSAGE_IDS.c.message_id == claim.message_id,
                        MESSAGE_IDS.c.task_id == claim.task_id,
                    )
                )
            )

    async def set_reply(self, claim: MessageClaim, reply: bytes) -> None:
        """The Message that answered `claim`, for its repeats."""
        if self._engine is None:
            key = (claim.owner, claim.message_id)
            if (held := self._memory.get(key)) is not None and held.task_id == claim.task_id:
                self._memory[key] = replace(held, reply=reply)
            return
        await until_stored(functools.partial(self._set_reply, claim, reply), self._health)

    async def _set_reply(self, claim: MessageClaim, reply: bytes) -> None:
        assert self._engine is not None
        async with self._engine.begin() as conn:
            await conn.execute(
                update(MESSAGE_IDS)
                .where(
                    and_(
                        MESSAGE_IDS.c.owner == claim.owner,
                        MESSAGE_IDS.c.message_id == claim.message_id,
                        MESSAGE_IDS.c.task_id == claim.task_id,
                    )
                )
                .values(reply=reply)
            )

    async def recent_in_context(
        self, owner: str, context_id: str, since: datetime, *, include_stored: bool = False
    ) -> list[MessageClaim]:
        """Claims of one conversation made after `since` whose task is not in the
        database (yet), or all of them with `include_stored`; in memory, every
        recent claim of the conversation. Claims answered by a Message are left
        out: they never become a task."""
        if self._engine is None:
            return [
                c
                for c in self._memory.values()
                if c.owner == owner
                and c.context_id == context_id
                and c.created_at >= since
                and not c.replies
            ]
        conditions = [
            MESSAGE_IDS.c.owner == owner,
            MESSAGE_IDS.c.context_id == context_id,
            MESSAGE_IDS.c.created_at >= since,
            MESSAGE_IDS.c.reply.is_(None),
        ]
        if not include_stored:
            stored = select(_TASKS.c.id).where(_TASKS.c.id == MESSAGE_IDS.c.task_id)
            conditions.append(~stored.exists())
        with refusing(self._health):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(MESSAGE_IDS).where(and_(*conditions)))).all()
        return [MessageClaim(**row._mapping) for row in rows]

    async def prune(self, older_than: datetime) -> int:
        """Forget claims made before `older_than` (naive UTC): their ids may be used again."""
        if self._engine is None:
            expired = [k for k, c in self._memory.items() if c.created_at < older_than]
            for key in expired:
                del self._memory[key]
            return len(expired)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(MESSAGE_IDS).where(MESSAGE_IDS.c.created_at < older_than)
            )
        return result.rowcount or 0

    def _expired(self, claim: MessageClaim) -> bool:
        return bool(self._retention) and claim.created_at < now_utc() - timedelta(
            seconds=self._retention
        )

    def _prune_memory(self) -> None:
        # Memory has no pruning task of its own: now and then, on a claim.
        if not self._retention or time.monotonic() - self._memory_pruned < 60:
            return
        self._memory_pruned = time.monotonic()
        cutoff = now_utc() - timedelta(seconds=self._retention)
        for key in [k for k, c in self._memory.items() if c.created_at < cutoff]:
            del self._memory[key]
