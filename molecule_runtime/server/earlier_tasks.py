"""The earlier tasks of a conversation that a new message waits for (or
interrupts) under MOLECULE_CONCURRENT_MESSAGES (server/submission.py, rule 3):
which ones run now, in claim order, and waiting until they stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import ListTasksRequest, Task, TaskState
from a2a.utils.errors import A2AError

from molecule_runtime.server.task_watch import TaskWatch
from molecule_runtime.states import RUNNING_STATES
from molecule_runtime.store import ObservedTaskStore
from molecule_runtime.store.claims_table import MessageClaim, now_utc
from molecule_runtime.store.message_ids import MessageIds
from molecule_runtime.store.owners import acting_for

log = logging.getLogger(__name__)

# A claimed message's task is created moments after the claim; a claim whose
# task is still missing after this long was made by a process that died in
# between, and is taken over.
PENDING_CLAIM_TIMEOUT = 15.0
# Claims this recent may belong to tasks not stored yet (same conversation).
PENDING_CLAIM_WINDOW = timedelta(seconds=60)

# How `interrupt` cancels a task: the request handler's CancelTask.
Cancel = Callable[[str, ServerCallContext], Awaitable[object]]


def claim_order(claim: MessageClaim) -> tuple[datetime, str]:
    """Arrival order of claimed messages: claim time, then task id for a tie."""
    return (claim.created_at, claim.task_id)


class EarlierTasks:
    def __init__(self, store: ObservedTaskStore, message_ids: MessageIds, watch: TaskWatch) -> None:
        self.store = store
        self.message_ids = message_ids
        self.watch = watch

    async def running_in(
        self, owner: str, context_id: str, this_task: str, this_claim: MessageClaim | None
    ) -> list[str]:
        """Tasks of the conversation sent before this message that run now, or
        were claimed but not stored yet.

        Messages sent at once are ordered by their claims (`claim_order`, the same
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
        ours = claim_order(this_claim) if this_claim is not None else None
        first_claimed: dict[str, tuple[datetime, str]] = {}
        if ours is not None and submitted:
            for claim in await self.message_ids.recent_in_context(
                owner, context_id, since, include_stored=True
            ):
                key = claim_order(claim)
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
        for claim in sorted(claims, key=claim_order):
            if claim.task_id == this_task or claim.task_id in ids:
                continue
            if ours is not None and claim_order(claim) > ours:
                continue
            stored = await self.store.get(claim.task_id, as_owner)
            if stored is None or stored.task.status.state in RUNNING_STATES:
                ids.append(claim.task_id)
        return ids

    async def interrupt(
        self, earlier: list[str], owner: str, context: ServerCallContext, cancel: Cancel | None
    ) -> None:
        """Cancel the earlier tasks, then wait until none runs."""
        for task_id in earlier:
            await self.until_exists(task_id, owner)
            if cancel is None:
                continue
            try:
                await cancel(task_id, context)
            except A2AError as exc:
                # It ended (or was canceled) meanwhile: nothing to interrupt.
                log.debug("interrupting task %s: %s", task_id, exc)
            except Exception:
                log.exception("could not interrupt task %s", task_id)
        await self.until_stopped(earlier, owner)

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

    async def until_stopped(self, task_ids: list[str], owner: str) -> None:
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
