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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field, replace

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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.sdk_seam import version_number
from molecule_runtime.states import TERMINAL_STATE_NAMES
from molecule_runtime.store.health import (
    RETRY_MAX,
    RETRY_MIN,
    StoreHealth,
    is_transient,
    until_stored,
)
from molecule_runtime.store.task_writes import (
    MAX_UNSTORED,
    BatchConflict,
    PendingWrite,
    RowCache,
    stored_version,
    task_row,
    write_batch,
    write_pending,
)

log = logging.getLogger(__name__)

# How long streamed chunks may wait to be stored when nothing else is written;
# a state change is committed at once, with everything pending before it.
FLUSH_INTERVAL = 0.1
# Clean tasks not written for this long are forgotten (a later write is a takeover).
IDLE_FORGET = 600.0
_WORKING = TaskState.Name(TaskState.TASK_STATE_WORKING)
# How long an id this process made up for a new task is taken as not stored
# without asking the database (until the task's first write, at most this).
NEW_ID_TTL = 60.0


class TaskNotStored(RuntimeError):
    """A task's write the database rejected for good: the task fails, not the others."""

    def __init__(self, task_id: str, cause: Exception) -> None:
        super().__init__(
            f"The task could not be stored: the database rejected its data for good "
            f"({type(cause).__name__}, logged by the server), which retrying cannot mend. "
            "Other tasks are not affected."
        )
        self.task_id = task_id


@dataclass
class _Pending:
    """What this process wrote to one task and the database does not have yet."""

    owner: str
    stored: int  # the version the database holds (0: the task is not there yet)
    version: int  # the last version handed out
    snapshot: Task | None = None  # the task at `version`, while it is ahead of `stored`
    events: list[tuple[int, bytes]] = field(default_factory=list)
    cancel: bool = False  # a pending write cancels the task
    waiters: list[tuple[int, asyncio.Future[int]]] = field(default_factory=list)
    error: Exception | None = None
    touched: float = field(default_factory=time.monotonic)
    row_cache: RowCache = field(default_factory=dict)
    # Versions a commit tried to store when the database dropped the connection:
    # the commit may have gone through nonetheless.
    tried: set[int] = field(default_factory=set)

    @property
    def dirty(self) -> bool:
        return self.version > self.stored and self.error is None


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
        self._tasks: dict[str, _Pending] = {}
        self._new_ids: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._urgent = False
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
                pending = _Pending(owner, stored=0, version=0)
            else:
                # A task this process did not write before: leave a gap (module doc).
                pending = _Pending(owner, stored=known, version=known + MAX_UNSTORED)
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
            self._wake.set()
            if len(pending.events) >= MAX_UNSTORED:
                await self._wait(pending, pending.events[0][0])
            return TaskVersion(version)
        return TaskVersion(await self._wait(pending, version))

    async def wait_stored(self, task_id: str) -> None:
        """Return once everything written to `task_id` so far is in the database."""
        pending = self._tasks.get(task_id)
        if pending is not None and pending.dirty:
            await self._wait(pending, pending.version)

    async def _wait(self, pending: _Pending, version: int) -> int:
        """Until `version` is committed; a waiter makes the next commit start at once."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        pending.waiters.append((version, future))
        self._urgent = True
        self._wake.set()
        return await future

    # -- the committer -------------------------------------------------------

    def _ensure_committer(self) -> None:
        if self._committer is None or self._committer.done():
            if self._closed:
                raise RuntimeError("the task store is closed")
            self._committer = asyncio.get_running_loop().create_task(
                self._commit_loop(), name="task-store-committer"
            )

    async def aclose(self) -> None:
        """Store what is pending, then stop the committer."""
        self._closed = True
        deadline = time.monotonic() + 10.0
        while any(p.dirty for p in self._tasks.values()) and time.monotonic() < deadline:
            self._urgent = True
            self._wake.set()
            await asyncio.sleep(0.01)
            if self._committer is None or self._committer.done():
                break
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer

    async def _commit_loop(self) -> None:
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
            items = [(self._item(task_id, p), p) for task_id, p in self._tasks.items() if p.dirty]
            if items:
                await self._commit_with_retries(items)
            self._forget_idle()

    def _item(self, task_id: str, pending: _Pending) -> PendingWrite:
        assert pending.snapshot is not None
        return PendingWrite(
            task_id,
            pending.owner,
            expect=pending.stored,
            upto=pending.version,
            row=task_row(pending.snapshot, pending.owner, pending.row_cache),
            events=list(pending.events),
            cancel=pending.cancel,
        )

    def _dirty_items(self) -> list[tuple[PendingWrite, _Pending]]:
        return [(self._item(task_id, p), p) for task_id, p in self._tasks.items() if p.dirty]

    async def _commit_with_retries(self, items: list[tuple[PendingWrite, _Pending]]) -> None:
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

    async def _commit_alone(self, item: PendingWrite, pending: _Pending) -> None:
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
                    item = self._item(item.task_id, pending)
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
                    item = self._item(item.task_id, pending)
                    continue
            self._settle(item, pending, outcome)
            return

    async def _stored_version(self, task_id: str) -> int | None:
        async with self._engine.connect() as conn:
            return await stored_version(conn, task_id)

    def _settle(self, item: PendingWrite, pending: _Pending, outcome: int | Exception) -> None:
        if isinstance(outcome, Exception):
            pending.error = outcome
            pending.events.clear()
            pending.snapshot = None
            for _, future in pending.waiters:
                if not future.done():
                    future.set_exception(outcome)
            pending.waiters.clear()
            return
        pending.stored = outcome
        pending.version = max(pending.version, outcome)
        pending.tried = {v for v in pending.tried if v > outcome}
        stored_upto = item.upto
        pending.events = [(v, d) for v, d in pending.events if v > stored_upto]
        if item.cancel and outcome != item.upto:
            pending.events.clear()
        if pending.version == pending.stored:
            pending.snapshot = None
            pending.cancel = False
        remaining = []
        for version, future in pending.waiters:
            if future.done():
                continue
            if version <= stored_upto:
                future.set_result(outcome if version == stored_upto else version)
            else:
                remaining.append((version, future))
        pending.waiters = remaining
        status = item.row.get("status")
        state = status.get("state") if isinstance(status, dict) else None
        if state != _WORKING:
            # Only a working task is written again soon: a waiting one keeps no copies.
            pending.row_cache.clear()
        if pending.stored and pending.version == pending.stored and state in TERMINAL_STATE_NAMES:
            # Nothing is written after a terminal state.
            self._tasks.pop(item.task_id, None)

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for task_id in [t for t, born in self._new_ids.items() if now - born >= NEW_ID_TTL]:
            del self._new_ids[task_id]
        cutoff = now - IDLE_FORGET
        for task_id in [
            t for t, p in self._tasks.items() if not p.dirty and not p.waiters and p.touched < cutoff
        ]:
            del self._tasks[task_id]

