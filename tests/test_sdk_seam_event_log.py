"""Pins the a2a-sdk's event log internals that the task event log reads through
molecule_runtime/sdk_seam.py (`logged_events_after`, `logged_event`): the
stream's private table model, sessions and initialisation, and its decoding of
a row. An SDK upgrade that renames or reshapes them fails here first."""

from __future__ import annotations

from pathlib import Path

from a2a.server.cluster import DatabaseTaskEventStream, TaskVersion, VersionedDatabaseTaskStore
from a2a.types.a2a_pb2 import Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from sqlalchemy.ext.asyncio import create_async_engine

from molecule_runtime.sdk_seam import logged_event, logged_events_after
from molecule_runtime.store.event_log import TaskEventLog
from molecule_runtime.store.owners import acting_for


def _update(task_id: str, state: TaskState.ValueType) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))


async def test_the_sdks_event_rows_are_read_after_a_version_in_write_order(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    try:
        store = VersionedDatabaseTaskStore(engine)
        context = acting_for("alice")
        states = [TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED]
        version = TaskVersion.MISSING
        for state in states:
            task = Task(id="t1", context_id="c", status=TaskStatus(state=state))
            version = await store.save(task, event=_update("t1", state), prev_version=version, context=context)
        other = Task(id="t2", context_id="c", status=TaskStatus(state=TaskState.TASK_STATE_WORKING))
        await store.save(other, event=other, prev_version=TaskVersion.MISSING, context=context)

        # A fresh stream over the same engine: the seam initialises it itself.
        stream = DatabaseTaskEventStream(engine)
        rows = await logged_events_after(stream, "t1", 0)
        assert [number for number, _ in rows] == [1, 2, 3]
        events = [logged_event(data) for _, data in rows]
        assert all(isinstance(event, TaskStatusUpdateEvent) for event in events)
        assert [event.status.state for event in events] == states  # type: ignore[union-attr]

        assert [number for number, _ in await logged_events_after(stream, "t1", 2)] == [3]
        assert await logged_events_after(stream, "t1", 3) == []
        only = await logged_events_after(stream, "t2", 0)
        assert len(only) == 1
        assert isinstance(logged_event(only[0][1]), Task)

        # The runtime's log reads the same rows (and decodes them the same way).
        log = TaskEventLog(engine, poll_interval_s=0.05)
        assert [(n, e.status.state) for n, e in await log.read_after("t1", 1)] == [  # type: ignore[union-attr]
            (2, TaskState.TASK_STATE_WORKING),
            (3, TaskState.TASK_STATE_COMPLETED),
        ]
    finally:
        await engine.dispose()


async def test_the_sdk_stream_keeps_the_private_names_the_seam_reads(tmp_path: Path) -> None:
    """Named one by one, so a rename says which name moved."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'names.db'}")
    try:
        stream = DatabaseTaskEventStream(engine)
        for name in ("_ensure_initialized", "_event_model", "_session_maker"):
            assert hasattr(stream, name), name
        for column in ("task_id", "task_version", "event_data", "seq"):
            assert hasattr(stream._event_model, column), column
    finally:
        await engine.dispose()
