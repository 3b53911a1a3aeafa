"""The A2A task store: SQLite by default, in memory or PostgreSQL on request."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from a2a.server.cluster import (
    DatabaseTaskEventStream,
    LegacyTaskStoreAdapter,
    StoredTask,
    TaskEventStream,
    TaskVersion,
    VersionedDatabaseTaskStore,
    VersionedTaskStore,
)
from a2a.server.cluster.database_event_stream import stream_response_to_event
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.models import TaskEventModel, TaskModel
from a2a.server.tasks import (
    DatabasePushNotificationConfigStore,
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    PushNotificationConfigStore,
    TaskStore,
)
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    ListTasksResponse,
    StreamResponse,
    Task,
    TaskState,
    TaskStatusUpdateEvent,
)
from sqlalchemy import and_, delete, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from molecule_runtime.config import Settings, redact_url
from molecule_runtime.push import PushNotifier

log = logging.getLogger(__name__)

# How often a subscriber to a task running in another process (or being
# recovered headless) polls the shared event log.
EVENT_POLL_INTERVAL = 0.2

_LOCK_KEY = "molecule_runtime.schema"

# SQLAlchemy's default pool (5 + 10 connections) is kept: a larger one keeps
# its idle connections (and their file descriptors) open after a burst. Under
# a burst, tasks wait for a connection a little longer instead of failing.
_POOL = {"pool_timeout": 60}


class StoreConfigError(ValueError):
    """TASK_STORE_URL names something the runtime cannot use."""


_TERMINAL = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
    }
)
_TERMINAL_NAMES = frozenset(TaskState.Name(state) for state in _TERMINAL)


@dataclass(frozen=True)
class StoreOptions:
    """What the stores need from the settings besides the URL."""

    event_retention: float = 7 * 86400.0  # seconds; 0 keeps events forever
    push_notifications: bool = True
    push_allow_private: bool = False
    push_max_attempts: int = 5
    push_retry_initial_interval: float = 1.0


# Called after a write that recorded `event`: (task id, event, new version).
WriteObserver = Callable[[str, Any, TaskVersion], None]


class ObservedTaskStore(VersionedTaskStore):
    """The task store, telling this process's observers about every event it records.

    Every writer goes through it: the SDK's request handler (live streams,
    CancelTask) and the runtime's own writes (headless recovery after a crash,
    stages of tasks whose client stream is in another process). So push
    notifications, live stream offsets and subscriber wake-ups see every event,
    whoever wrote it.
    """

    def __init__(self, inner: VersionedTaskStore) -> None:
        self.inner = inner
        self._observers: list[WriteObserver] = []

    def observe(self, observer: WriteObserver) -> None:
        self._observers.append(observer)

    async def save(
        self,
        task: Task,
        *,
        event: Event | None = None,
        prev: Task | None = None,
        prev_version: TaskVersion,
        context: ServerCallContext,
    ) -> TaskVersion:
        version = await self.inner.save(
            task, event=event, prev=prev, prev_version=prev_version, context=context
        )
        if event is not None:
            for observer in self._observers:
                try:
                    observer(task.id, event, version)
                except Exception:
                    # Observers are best-effort; the write itself succeeded.
                    log.exception("task store observer failed for task %s", task.id)
        return version

    async def get(self, task_id: str, context: ServerCallContext) -> StoredTask | None:
        return await self.inner.get(task_id, context)

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        return await self.inner.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await self.inner.delete(task_id, context)


def version_number(version: TaskVersion) -> int:
    """A database store's version as the integer the event log records."""
    value = version._value  # the SDK exposes no accessor for it
    return value if isinstance(value, int) else 0


def is_terminal(event: object) -> bool:
    return isinstance(event, Task | TaskStatusUpdateEvent) and event.status.state in _TERMINAL


class LiveEventOffsets:
    """The log offset (task version) each recently written event got.

    Events reach a live SSE stream (SendStreamingMessage) from the SDK's
    in-process queue, which does not carry the version the store gave them;
    the store write happens just before the event is queued, so it is looked
    up here by identity (status and artifact updates are streamed as the very
    objects written) or, for Task snapshots (streamed as copies), by status.
    """

    def __init__(self, per_task: int = 256, tasks: int = 2048, forget_after: float = 60.0) -> None:
        self._recent: OrderedDict[str, deque[tuple[object, bytes | None, int]]] = OrderedDict()
        self._per_task = per_task
        self._tasks = tasks
        self._forget_after = forget_after

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
        entries.append((event, status, number))
        if is_terminal(event):
            # Live subscribers read the last events within moments.
            asyncio.get_running_loop().call_later(
                self._forget_after, self._recent.pop, task_id, None
            )

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

    def __init__(self, engine: AsyncEngine, poll_interval_s: float) -> None:
        super().__init__(engine, poll_interval_s=poll_interval_s)
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def wake(self, task_id: str, _event: object = None, _version: object = None) -> None:
        for waiter in self._waiters.get(task_id, ()):
            waiter.set()

    async def read_after(self, task_id: str, after: int) -> list[tuple[int, Event]]:
        """The logged events of `task_id` with a version above `after`, in order."""
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
        events = []
        for version, data in rows:
            response = StreamResponse()
            response.ParseFromString(data)
            events.append((int(version), stream_response_to_event(response)))
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


async def prune_events(engine: AsyncEngine, older_than: datetime) -> int:
    """Delete the logged events of finished tasks last updated before `older_than`.

    The tasks themselves stay (GetTask, ListTasks); only their replay goes.
    """
    # The SDK stores last_updated as naive UTC.
    cutoff = older_than.astimezone(UTC).replace(tzinfo=None)
    with_events = select(TaskEventModel.task_id).distinct().subquery()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(TaskModel.id, TaskModel.status)
                .join(with_events, with_events.c.task_id == TaskModel.id)
                .where(TaskModel.last_updated < cutoff)
            )
        ).all()
    finished = [
        task_id
        for task_id, status in rows
        if isinstance(status, dict) and status.get("state") in _TERMINAL_NAMES
    ]
    deleted = 0
    for start in range(0, len(finished), 500):
        batch = finished[start : start + 500]
        async with engine.begin() as conn:
            result = await conn.execute(
                delete(TaskEventModel).where(TaskEventModel.task_id.in_(batch))
            )
            deleted += result.rowcount or 0
    return deleted


async def _prune_periodically(engine: AsyncEngine, retention: float) -> None:
    # Often enough that rows outlive the retention by a fraction of it at most.
    interval = min(max(retention / 4, 1.0), 3600.0)
    while True:
        await asyncio.sleep(interval)
        try:
            cutoff = datetime.now(UTC) - timedelta(seconds=retention)
            deleted = await prune_events(engine, cutoff)
            if deleted:
                log.info("pruned %d logged events of tasks finished before %s", deleted, cutoff)
        except Exception:
            log.exception("pruning the task event log failed; retrying later")


@dataclass
class Stores:
    """The task store in the shapes its users need."""

    handler_store: TaskStore | VersionedTaskStore  # given to the SDK request handler
    versioned: VersionedTaskStore  # read and written by the runtime (history, headless)
    event_stream: TaskEventStream | None  # cross-process event log (database stores)
    engine: AsyncEngine | None
    description: str
    push_configs: PushNotificationConfigStore | None = None
    notifier: PushNotifier | None = None
    live_offsets: LiveEventOffsets = field(default_factory=LiveEventOffsets)
    _pruner: asyncio.Task[None] | None = None

    @property
    def event_log(self) -> TaskEventLog | None:
        return self.event_stream if isinstance(self.event_stream, TaskEventLog) else None

    async def check(self) -> None:
        """Raise if the store cannot be reached."""
        if self.engine is not None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        if self.notifier is not None:
            await self.notifier.aclose()
        if self.engine is not None:
            await self.engine.dispose()


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        # WAL lets readers (GetTask, ListTasks) proceed while a task streams.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


@contextlib.asynccontextmanager
async def _schema_lock(engine: AsyncEngine, url: str) -> AsyncIterator[None]:
    """Serialise schema creation between processes starting at the same moment.

    Replicas and workers started together on an empty database would otherwise
    race in CREATE TABLE and some would crash.
    """
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": _LOCK_KEY})
            try:
                yield
            finally:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": _LOCK_KEY}
                )
        return
    db_path = url.removeprefix("sqlite+aiosqlite:///")
    if engine.dialect.name != "sqlite" or not db_path or db_path == ":memory:":
        yield
        return
    with open(f"{db_path}.init-lock", "a+") as lock_file:
        await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _observe(stores: Stores, options: StoreOptions) -> Stores:
    """Hook push notifications, live offsets and follower wake-ups to every write."""
    observed = stores.versioned
    assert isinstance(observed, ObservedTaskStore)
    observed.observe(stores.live_offsets.record)
    if stores.event_log is not None:
        observed.observe(stores.event_log.wake)
    if options.push_notifications and stores.push_configs is not None:
        stores.notifier = PushNotifier(
            stores.push_configs,
            allow_private=options.push_allow_private,
            max_attempts=options.push_max_attempts,
            retry_initial_interval=options.push_retry_initial_interval,
        )
        observed.observe(stores.notifier.notify)
    return stores


async def open_stores(url: str, options: StoreOptions | None = None) -> Stores:
    options = options or StoreOptions()
    if url == "memory":
        memory = ObservedTaskStore(LegacyTaskStoreAdapter(InMemoryTaskStore()))
        stores = Stores(
            memory,
            memory,
            None,
            None,
            "memory (lost on restart)",
            push_configs=InMemoryPushNotificationConfigStore(),
        )
        return _observe(stores, options)
    if url.startswith("sqlite"):
        if not url.startswith("sqlite+aiosqlite:///"):
            raise StoreConfigError(
                f"TASK_STORE_URL={url!r}: SQLite URLs must use the async driver, "
                "e.g. sqlite+aiosqlite:///path/to/tasks.db"
            )
        db_path = url.removeprefix("sqlite+aiosqlite:///")
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **_POOL)
        _sqlite_pragmas(engine)
    elif url.startswith("postgresql+asyncpg://"):
        engine = create_async_engine(url, pool_pre_ping=True, **_POOL)
    else:
        raise StoreConfigError(
            f"TASK_STORE_URL={redact_url(url)!r} is not supported: use 'memory', "
            "'sqlite+aiosqlite:///<file>' or 'postgresql+asyncpg://user:pass@host/db'"
        )
    database = VersionedDatabaseTaskStore(engine)
    stream = TaskEventLog(engine, poll_interval_s=EVENT_POLL_INTERVAL)
    push_configs = DatabasePushNotificationConfigStore(engine)
    try:
        async with _schema_lock(engine, url):
            await database.initialize()
            await stream.initialize()
            await push_configs.initialize()
    except Exception:
        await engine.dispose()
        raise
    versioned = ObservedTaskStore(database)
    stores = Stores(
        versioned, versioned, stream, engine, redact_url(url), push_configs=push_configs
    )
    if options.event_retention > 0:
        stores._pruner = asyncio.get_running_loop().create_task(
            _prune_periodically(engine, options.event_retention), name="prune-task-events"
        )
    return _observe(stores, options)


def store_options(settings: Settings) -> StoreOptions:
    return StoreOptions(
        event_retention=settings.event_retention,
        push_notifications=settings.push_notifications,
        push_allow_private=settings.push_allow_private,
        push_max_attempts=settings.push_max_attempts,
        push_retry_initial_interval=settings.push_retry_initial_interval,
    )
