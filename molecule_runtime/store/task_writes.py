"""One task's pending writes as SQL, inside the group commit's transaction.

The rows are the SDK's own (`tasks`, `task_versions`, `task_events`, as
`VersionedDatabaseTaskStore` writes them), so the SDK reads what is written here.
"""

from __future__ import annotations

from dataclasses import dataclass

from a2a.server.cluster import ConcurrentTaskModificationError
from a2a.server.models import TaskEventModel, TaskModel, TaskVersionModel
from a2a.types.a2a_pb2 import Task, TaskState
from google.protobuf.json_format import MessageToDict
from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from molecule_runtime.states import TERMINAL_STATES

# Events of one task streamed but not stored yet, at most; also the versions a
# new writer of a task skips, so its events come after any a crashed writer streamed.
MAX_UNSTORED = 64
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03", "57P01", "08006", "08003"})


@dataclass
class PendingWrite:
    """What one task has to write: events `expect`+1 … `upto` and the task row at `upto`."""

    task_id: str
    owner: str
    expect: int  # the version the database should hold (0: the task is new)
    upto: int
    row: dict[str, object]
    events: list[tuple[int, bytes]]
    cancel: bool


_TASKS = TaskModel.__table__
_VERSIONS = TaskVersionModel.__table__
_EVENTS = TaskEventModel.__table__


def is_transient(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and not isinstance(error, IntegrityError):
        return isinstance(error, OperationalError) or (
            getattr(error.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES
        )
    return isinstance(error, OSError | TimeoutError)


def task_row(task: Task, owner: str) -> dict[str, object]:
    """The `tasks` row of a task, as the SDK's DatabaseTaskStore writes it."""
    return {
        "id": task.id,
        "context_id": task.context_id,
        "kind": "task",
        "owner": owner,
        "last_updated": (
            task.status.timestamp.ToDatetime() if task.status.HasField("timestamp") else None
        ),
        "status": MessageToDict(task.status),
        "artifacts": [MessageToDict(artifact) for artifact in task.artifacts],
        "history": [MessageToDict(message) for message in task.history],
        "metadata": MessageToDict(task.metadata) if task.metadata.fields else None,
        "protocol_version": "1.0",
    }


async def write_pending(conn: AsyncConnection, item: PendingWrite) -> int | Exception:
    """Write one task's pending events; its new stored version, or the conflict."""
    key = and_(_VERSIONS.c.task_id == item.task_id, _VERSIONS.c.owner == item.owner)
    events = item.events
    upto = item.upto
    if item.expect == 0 and not item.cancel:
        await conn.execute(
            insert(_VERSIONS).values(task_id=item.task_id, owner=item.owner, version=upto)
        )
        await conn.execute(insert(_TASKS).values(**item.row))
    else:
        if item.cancel:
            stored = await _cancelable_version(conn, item)
            if stored is None:
                return ConcurrentTaskModificationError(item.task_id)
            if stored != item.expect:
                # Another writer moved the task on: its cancel goes after
                # whatever that writer may have streamed.
                upto = stored + MAX_UNSTORED + 1
                events = [(upto, events[-1][1])] if events else []
            condition = and_(key, _VERSIONS.c.version == stored)
        else:
            condition = and_(key, _VERSIONS.c.version == item.expect)
        result = await conn.execute(update(_VERSIONS).where(condition).values(version=upto))
        if result.rowcount == 0:
            return ConcurrentTaskModificationError(item.task_id)
        row = {k: v for k, v in item.row.items() if k not in ("id", "owner")}
        await conn.execute(
            update(_TASKS)
            .where(and_(_TASKS.c.id == item.task_id, _TASKS.c.owner == item.owner))
            .values(**row)
        )
    if events:
        await conn.execute(
            insert(_EVENTS),
            [
                {
                    "task_id": item.task_id,
                    "owner": item.owner,
                    "task_version": version,
                    "event_data": data,
                }
                for version, data in events
            ],
        )
    return upto

async def _cancelable_version(conn: AsyncConnection, item: PendingWrite) -> int | None:
    """The stored version of a task about to be canceled; None if it cannot be."""
    version = (
        await conn.execute(
            select(_VERSIONS.c.version)
            .where(
                and_(
                    _VERSIONS.c.task_id == item.task_id,
                    _VERSIONS.c.owner == item.owner,
                )
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    status = (
        await conn.execute(
            select(_TASKS.c.status).where(
                and_(_TASKS.c.id == item.task_id, _TASKS.c.owner == item.owner)
            )
        )
    ).scalar_one_or_none()
    if version is None or not isinstance(status, dict):
        return None
    if TaskState.Value(str(status.get("state"))) in TERMINAL_STATES:
        return None
    return int(version)
