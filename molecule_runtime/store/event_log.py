"""The task's event log, read by offset (the task version of each event), and the
offsets of the events a live stream in this process is relaying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable

from a2a.server.cluster import DatabaseTaskEventStream, TaskVersion
from a2a.server.events.event_queue import Event
from a2a.types.a2a_pb2 import Task
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.observability import metrics
from molecule_runtime.sdk_seam import logged_event, logged_events_after, version_number
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


class _Feed:
    """One task's shared reader and the followers it hands each event to."""

    def __init__(self, after: int) -> None:
        self.after = after  # the reader has handed on every event up to here
        self.followers: set[asyncio.Queue[tuple[int, Event]]] = set()
        self.written = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None


class TaskEventLog(DatabaseTaskEventStream):
    """The SDK's `task_events` log, read by offset (the task version of each event).

    Same table, same writes (the task store appends each event in the
    transaction that applies it); this adds reads after a given version, for
    replay, and one shared reader per followed task: it reads at once when
    this process writes the task, and polls every `poll_interval_s` only for
    writes made by other processes, however many followers the task has.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        poll_interval_s: float,
        unstored: Callable[[str, int], list[tuple[int, bytes]]] | None = None,
    ) -> None:
        super().__init__(engine, poll_interval_s=poll_interval_s)
        self._poll_s = poll_interval_s
        self._feeds: dict[str, _Feed] = {}
        # Events this process streamed that the write-behind store holds back.
        self._unstored = unstored

    def wake(self, task_id: str, _event: object = None, _version: object = None) -> None:
        """A write observer: the task's reader (if it is followed here) reads now."""
        feed = self._feeds.get(task_id)
        if feed is not None:
            feed.written.set()

    async def read_after(self, task_id: str, after: int) -> list[tuple[int, Event]]:
        """The logged events of `task_id` with a version above `after`, in order.

        Includes the events this process has written but not stored yet, so a
        subscriber here follows a stream without waiting for the store.
        """
        metrics.EVENT_LOG_READS.inc()
        # Read before the database: an event committed in between is then in
        # the database rows, so none is missed (duplicates are merged below).
        unstored = self._unstored(task_id, after) if self._unstored is not None else []
        by_version = dict(await logged_events_after(self, task_id, after))
        for version, data in unstored:
            by_version.setdefault(version, data)
        return [(version, logged_event(data)) for version, data in sorted(by_version.items())]

    async def follow(self, task_id: str, after: int) -> AsyncIterator[tuple[int, Event]]:
        """Logged events after `after`, then new ones as they are written; never ends.

        The follower joins the task's shared reader first, then reads what it
        missed (if it starts behind the reader), so no event falls in between;
        events seen twice that way are skipped by offset.
        """
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        feed = self._feeds.get(task_id)
        if feed is None:
            feed = self._feeds[task_id] = _Feed(after)
            feed.reader = asyncio.get_running_loop().create_task(
                self._read_for(task_id, feed), name=f"event-log-reader:{task_id}"
            )
        feed.followers.add(queue)
        metrics.EVENT_LOG_FOLLOWERS.inc()
        try:
            if after < feed.after:
                for version, event_ in await self._read_retrying(task_id, after):
                    after = version
                    yield version, event_
            while True:
                version, event_ = await queue.get()
                if version > after:
                    after = version
                    yield version, event_
        finally:
            metrics.EVENT_LOG_FOLLOWERS.dec()
            feed.followers.discard(queue)
            if not feed.followers and self._feeds.get(task_id) is feed:
                del self._feeds[task_id]
                if feed.reader is not None:
                    feed.reader.cancel()

    async def _read_retrying(self, task_id: str, after: int) -> list[tuple[int, Event]]:
        while True:
            try:
                return await self.read_after(task_id, after)
            except OperationalError:
                log.debug("transient error reading events of %s", task_id, exc_info=True)
                await asyncio.sleep(self._poll_s)

    async def _read_for(self, task_id: str, feed: _Feed) -> None:
        """The shared reader: one read per write here, one poll per interval otherwise."""
        metrics.EVENT_LOG_READERS.inc()
        try:
            # Also checked here: a cancel that meets a wake-up may be lost.
            while self._feeds.get(task_id) is feed:
                feed.written.clear()
                for version, event_ in await self._read_retrying(task_id, feed.after):
                    feed.after = version
                    for queue in feed.followers:
                        queue.put_nowait((version, event_))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await feed.written.wait()
        finally:
            metrics.EVENT_LOG_READERS.dec()
