"""The database task store: state changes stored before they are acknowledged,
streamed chunks written behind, every task's pending writes in one transaction.

The SDK's `VersionedDatabaseTaskStore` runs one transaction per event and
rewrites the whole task each time, so the cost of a chunk grows with the
answer and with the number of tasks streaming at once. Here:

- a write that changes the task's state (creation, status update, cancel)
  waits until it is committed, as before;
- an artifact update (a streamed chunk) gets its version at once and is
  committed shortly after, behind the stream; at most `MAX_UNSTORED` events
  per task wait, beyond that the writer waits (backpressure);
- one background committer writes whatever every task has pending in one
  transaction, in version order, so a task's terminal state is never stored
  ahead of the chunks before it, and a crash leaves a gap-free prefix.

A process that writes a task it has not written before (after a restart, on
another replica) skips `MAX_UNSTORED` versions: events a crashed writer had
streamed but not stored can never share an offset with the new events.

The committer is store/committer.py; a task's pending writes, store/pending.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from a2a.server.cluster import (
    ConcurrentTaskModificationError,
    StoredTask,
    TaskVersion,
    VersionedDatabaseTaskStore,
    VersionedTaskStore,
)
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.owner_resolver import resolve_user_scope
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    ListTasksResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
)
from a2a.utils.proto_utils import to_stream_response
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.sdk_seam import version_number
from molecule_runtime.store.committer import Committer
from molecule_runtime.store.health import StoreHealth
from molecule_runtime.store.pending import PendingTask
from molecule_runtime.store.task_writes import MAX_UNSTORED

# Clean tasks not written for this long are forgotten (a later write is a takeover).
IDLE_FORGET = 600.0
# How long an id this process made up for a new task is taken as not stored
# without asking the database (until the task's first write, at most this).
NEW_ID_TTL = 60.0


class GroupCommitTaskStore(VersionedTaskStore):
    """A `VersionedTaskStore` with write-behind chunks and group commit (see module doc)."""

    def __init__(
        self,
        database: VersionedDatabaseTaskStore,
        engine: AsyncEngine,
        health: StoreHealth | None = None,
    ) -> None:
        self._db = database
        self._engine = engine
        self.health = health or StoreHealth()
        self._tasks: dict[str, PendingTask] = {}
        self._new_ids: dict[str, float] = {}
        self._commits = Committer(engine, self.health, self._tasks, self._forget_idle)
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    # -- reads ---------------------------------------------------------------

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        pending = self._tasks.get(task_id)
        if (
            pending is not None
            and pending.snapshot is not None
            and pending.error is None
            and pending.owner == resolve_user_scope(context)
        ):
            task = Task()
            task.CopyFrom(pending.snapshot)
            return StoredTask(task, TaskVersion(pending.version))
        born = self._new_ids.get(task_id)
        if born is not None:
            if time.monotonic() - born < NEW_ID_TTL:
                return None
            del self._new_ids[task_id]
        return await self._db.get(task_id, context)

    def expect_new(self, task_id: str) -> None:
        """`task_id` was just made up here (a random id) for a task about to be
        created: until its first write, reading it needs no database round trip
        (the SDK reads a new task three times before it exists)."""
        self._new_ids[task_id] = time.monotonic()

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        return await self._db.list(params, context)

    def unstored_events(self, task_id: str, after: int) -> list[tuple[int, bytes]]:
        """Events of `task_id` above `after` that are not in the database yet."""
        pending = self._tasks.get(task_id)
        if pending is None or pending.error is not None:
            return []
        return [(version, data) for version, data in pending.events if version > after]

    # -- writes --------------------------------------------------------------

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await self.wait_stored(task_id)
        self._tasks.pop(task_id, None)
        await self._db.delete(task_id, context)

    async def save(
        self,
        task: Task,
        *,
        event: Event | None = None,
        prev: Task | None = None,
        prev_version: TaskVersion,
        context: ServerCallContext,
    ) -> TaskVersion:
        del prev
        self._ensure_committer()
        self._new_ids.pop(task.id, None)
        owner = resolve_user_scope(context)
        canceled = task.status.state == TaskState.TASK_STATE_CANCELED
        pending = self._tasks.get(task.id)
        if pending is not None and pending.error is not None:
            del self._tasks[task.id]
            if version_number(prev_version) == pending.version:
                # Written on top of what failed: the writer has not heard yet.
                raise pending.error
            # The writer re-read the task since (the SDK does on a conflict):
            # its write goes on from there, as a takeover.
            pending = None
        if pending is not None and pending.owner != owner:
            raise ConcurrentTaskModificationError(task.id)
        if (
            pending is not None
            and not pending.dirty
            and not pending.waiters
            and version_number(prev_version) > pending.version
        ):
            # Everything this process wrote is stored, and the writer read a later
            # version: another process wrote the task since (a turn or stage on
            # another replica). Take it over as a task not written here before.
            del self._tasks[task.id]
            pending = None
        if pending is None:
            known = version_number(prev_version)
            if prev_version.is_missing:
                pending = PendingTask(owner, stored=0, version=0)
            else:
                # A task this process did not write before: leave a gap (module doc).
                pending = PendingTask(owner, stored=known, version=known + MAX_UNSTORED)
            self._tasks[task.id] = pending
        elif not canceled and version_number(prev_version) != pending.version:
            raise ConcurrentTaskModificationError(task.id)
        pending.version += 1
        version = pending.version
        pending.touched = time.monotonic()
        snapshot = Task()
        snapshot.CopyFrom(task)
        pending.snapshot = snapshot
        if event is not None:
            pending.events.append((version, to_stream_response(event).SerializeToString()))
        if canceled:
            pending.cancel = True
        if isinstance(event, TaskArtifactUpdateEvent) and not canceled:
            # A streamed chunk: stored behind the stream, unless too much is waiting.
            self._commits.nudge(urgent=False)
            if len(pending.events) >= MAX_UNSTORED:
                await self._wait(pending, pending.events[0][0])
            return TaskVersion(version)
        return TaskVersion(await self._wait(pending, version))

    async def wait_stored(self, task_id: str) -> None:
        """Return once everything written to `task_id` so far is in the database."""
        pending = self._tasks.get(task_id)
        if pending is not None and pending.dirty:
            await self._wait(pending, pending.version)

    async def _wait(self, pending: PendingTask, version: int) -> int:
        """Until `version` is committed; a waiter makes the next commit start at once."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        pending.waiters.append((version, future))
        self._commits.nudge(urgent=True)
        return await future

    # -- the committer -------------------------------------------------------

    def _ensure_committer(self) -> None:
        if self._committer is None or self._committer.done():
            if self._closed:
                raise RuntimeError("the task store is closed")
            self._committer = asyncio.get_running_loop().create_task(
                self._commits.run(), name="task-store-committer"
            )

    async def aclose(self) -> None:
        """Store what is pending, then stop the committer."""
        self._closed = True
        deadline = time.monotonic() + 10.0
        while any(p.dirty for p in self._tasks.values()) and time.monotonic() < deadline:
            self._commits.nudge(urgent=True)
            await asyncio.sleep(0.01)
            if self._committer is None or self._committer.done():
                break
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for task_id in [t for t, born in self._new_ids.items() if now - born >= NEW_ID_TTL]:
            del self._new_ids[task_id]
        cutoff = now - IDLE_FORGET
        for task_id in [
            t for t, p in self._tasks.items() if not p.dirty and not p.waiters and p.touched < cutoff
        ]:
            del self._tasks[task_id]

