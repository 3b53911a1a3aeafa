"""The background committer of the group-commit task store (store/group_commit.py).

One transaction writes whatever every task has pending, in version order;
while the database refuses it for now, it waits and tries again, without
limit. A write that races another process (or a commit whose answer was lost
with its connection) is retried task by task, so only that task is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import replace

from a2a.server.cluster import ConcurrentTaskModificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.store.failures import is_transient
from molecule_runtime.store.health import RETRY_MAX, RETRY_MIN, StoreHealth, until_stored
from molecule_runtime.store.pending import PendingTask, TaskNotStored
from molecule_runtime.store.task_writes import (
    BatchConflict,
    PendingWrite,
    stored_version,
    write_batch,
    write_pending,
)

# Logged under the store's name, as operators know it.
log = logging.getLogger("molecule_runtime.store.group_commit")

# How long streamed chunks may wait to be stored when nothing else is written;
# a state change is committed at once, with everything pending before it.
FLUSH_INTERVAL = 0.1


class Committer:
    """Commits the pending writes of `tasks` (shared with the store that hands them out)."""

    def __init__(
        self,
        engine: AsyncEngine,
        health: StoreHealth,
        tasks: dict[str, PendingTask],
        after_round: Callable[[], None],
    ) -> None:
        self._engine = engine
        self.health = health
        self._tasks = tasks
        self._after_round = after_round
        self._wake = asyncio.Event()
        self._urgent = False

    def nudge(self, *, urgent: bool) -> None:
        """Something is pending; urgent: a writer waits, the next commit starts at once."""
        if urgent:
            self._urgent = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent:
                # Chunks only: let more arrive, so one transaction carries many.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FLUSH_INTERVAL):
                        while not self._urgent:
                            self._wake.clear()
                            await self._wake.wait()
            self._wake.clear()
            self._urgent = False
            items = self._dirty_items()
            if items:
                await self._commit_with_retries(items)
            self._after_round()

    def _dirty_items(self) -> list[tuple[PendingWrite, PendingTask]]:
        return [(p.write(task_id), p) for task_id, p in self._tasks.items() if p.dirty]

    def _settle(self, item: PendingWrite, pending: PendingTask, outcome: int | Exception) -> None:
        if pending.settle(item, outcome):
            self._tasks.pop(item.task_id, None)

    async def _commit_with_retries(self, items: list[tuple[PendingWrite, PendingTask]]) -> None:
        """Commit `items` in one transaction; while the database refuses it for
        now, wait and try again (with whatever is pending by then), without limit."""
        delay = RETRY_MIN
        while True:
            self.health.note_waiting(sum(len(item.events) for item, _ in items))
            try:
                async with self._engine.begin() as conn:
                    outcomes = await write_batch(conn, [item for item, _ in items])
            except (IntegrityError, BatchConflict):
                # Some item's write raced another process (or a commit whose
                # answer was lost did go through): one by one, so only that
                # task is affected.
                for item, pending in items:
                    await self._commit_alone(item, pending)
                return
            except Exception as exc:
                if not is_transient(exc):
                    for item, pending in items:
                        await self._commit_alone(item, pending)
                    return
                for item, pending in items:
                    pending.tried.add(item.upto)
                self.health.failed(exc, sum(len(item.events) for item, _ in items))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                # Everything pending now goes in the next try, the newest state included.
                items = self._dirty_items()
                if not items:
                    return
                continue
            self.health.succeeded(sum(len(item.events) for item, _ in items))
            for (item, pending), outcome in zip(items, outcomes, strict=True):
                self._settle(item, pending, outcome)
            return

    async def _commit_alone(self, item: PendingWrite, pending: PendingTask) -> None:
        delay = RETRY_MIN
        while True:
            try:
                async with self._engine.begin() as conn:
                    outcome = await write_pending(conn, item)
            except IntegrityError:
                outcome = ConcurrentTaskModificationError(item.task_id)
            except Exception as exc:
                if is_transient(exc):
                    pending.tried.add(item.upto)
                    self.health.failed(exc, len(item.events))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    if not pending.dirty:
                        return
                    item = pending.write(item.task_id)
                    continue
                # Not the database's weather: something the runtime itself got
                # wrong for this task. It fails; the other tasks are not affected.
                log.error(
                    "task %s could not be stored (%s: %s); it fails",
                    item.task_id,
                    type(exc).__name__,
                    exc,
                )
                outcome = TaskNotStored(item.task_id, exc)
            else:
                self.health.succeeded(len(item.events))
            if isinstance(outcome, ConcurrentTaskModificationError) and pending.tried:
                stored = await until_stored(
                    functools.partial(self._stored_version, item.task_id), self.health
                )
                if stored is not None and stored in pending.tried and stored > pending.stored:
                    # A commit whose answer was lost with its connection did go through.
                    self._settle(replace(item, upto=stored, cancel=False), pending, stored)
                    if not pending.dirty:
                        return
                    item = pending.write(item.task_id)
                    continue
            self._settle(item, pending, outcome)
            return

    async def _stored_version(self, task_id: str) -> int | None:
        async with self._engine.connect() as conn:
            return await stored_version(conn, task_id)
