"""The task's event log, read by offset (the task version of each event), and the
offsets of the events a live stream in this process is relaying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable

from a2a.server.cluster import DatabaseTaskEventStream, TaskVersion
from a2a.server.cluster.database_event_stream import stream_response_to_event
from a2a.server.events.event_queue import Event
from a2a.types.a2a_pb2 import StreamResponse, Task
from sqlalchemy import and_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.sdk_seam import version_number
from molecule_runtime.states import is_interrupted, is_terminal

log = logging.getLogger(__name__)


class LiveEventOffsets:
    """The log offset (task version) each recently written event got.

    Events reach a live SSE stream (SendStreamingMessage) from the SDK's
    in-process queue, which does not carry the version the store gave them;
    the store write happens just before the event is queued, so it is looked
    up here by identity (status and artifact updates are streamed as the very
    objects written) or, for Task snapshots (streamed as copies), by status.
    """

    def __init__(
        self,
        per_task: int = 256,
        tasks: int = 2048,
        forget_after: float = 60.0,
        forget_waiting_after: float = 5.0,
    ) -> None:
        self._recent: OrderedDict[str, deque[tuple[object, bytes | None, int]]] = OrderedDict()
        self._per_task = per_task
        self._tasks = tasks
        self._forget_after = forget_after
        self._forget_waiting_after = forget_waiting_after

    def record(self, task_id: str, event: object, version: TaskVersion) -> None:
        number = version_number(version)
        if not number:
            return
        entries = self._recent.get(task_id)
        if entries is None:
            entries = self._recent[task_id] = deque(maxlen=self._per_task)
            while len(self._recent) > self._tasks:
                self._recent.popitem(last=False)
        status = (
            event.status.SerializeToString(deterministic=True) if isinstance(event, Task) else None
        )
        entry = (event, status, number)
        entries.append(entry)
        if is_terminal(event):
            # Live subscribers read the last events within moments.
            asyncio.get_running_loop().call_later(
                self._forget_after, self._recent.pop, task_id, None
            )
        elif is_interrupted(event):
            # A task may wait for its answer for hours: keep nothing for it.
            asyncio.get_running_loop().call_later(
                self._forget_waiting_after, self._forget_if_last, task_id, entry
            )

    def _forget_if_last(self, task_id: str, entry: tuple[object, bytes | None, int]) -> None:
        """Forget the task unless it was written again (answered) meanwhile."""
        entries = self._recent.get(task_id)
        if entries and entries[-1] is entry:
            del self._recent[task_id]

    def lookup(self, task_id: str, event: object) -> int | None:
        entries = self._recent.get(task_id)
        if not entries:
            return None
        if isinstance(event, Task):
            status = event.status.SerializeToString(deterministic=True)
            for _, recorded, number in reversed(entries):
                if recorded == status:
                    return number
            return None
        for recorded_event, _, number in reversed(entries):
            if recorded_event is event:
                return number
        return None


class TaskEventLog(DatabaseTaskEventStream):
    """The SDK's `task_events` log, read by offset (the task version of each event).

    Same table, same writes (the task store appends each event in the
    transaction that applies it); this adds reads after a given version, for
    replay, and wakes followers at once when this process writes, polling only
    for writes made by other processes.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        poll_interval_s: float,
        unstored: Callable[[str, int], list[tuple[int, bytes]]] | None = None,
    ) -> None:
        super().__init__(engine, poll_interval_s=poll_interval_s)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        # Events this process streamed that the write-behind store holds back.
        self._unstored = unstored

    def wake(self, task_id: str, _event: object = None, _version: object = None) -> None:
        for waiter in self._waiters.get(task_id, ()):
            waiter.set()

    async def read_after(self, task_id: str, after: int) -> list[tuple[int, Event]]:
        """The logged events of `task_id` with a version above `after`, in order.

        Includes the events this process has written but not stored yet, so a
        subscriber here follows a stream without waiting for the store.
        """
        # Read before the database: an event committed in between is then in
        # the database rows, so none is missed (duplicates are merged below).
        unstored = self._unstored(task_id, after) if self._unstored is not None else []
        await self._ensure_initialized()
        model = self._event_model
        async with self._session_maker() as session:
            rows = (
                await session.execute(
                    select(model.task_version, model.event_data)
                    .where(and_(model.task_id == task_id, model.task_version > after))
                    .order_by(model.seq.asc())
                )
            ).all()
        by_version = {int(version): data for version, data in rows}
        for version, data in unstored:
            by_version.setdefault(version, data)
        events = []
        for version, data in sorted(by_version.items()):
            response = StreamResponse()
            response.ParseFromString(data)
            events.append((version, stream_response_to_event(response)))
        return events

    async def follow(self, task_id: str, after: int) -> AsyncIterator[tuple[int, Event]]:
        """Logged events after `after`, then new ones as they are written; never ends."""
        waiter = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(waiter)
        try:
            while True:
                waiter.clear()
                try:
                    batch = await self.read_after(task_id, after)
                except OperationalError:
                    log.debug("transient error reading events of %s", task_id, exc_info=True)
                    batch = []
                for version, event_ in batch:
                    after = version
                    yield version, event_
                if not batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter.wait(), self._poll_interval_s)
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[task_id]
