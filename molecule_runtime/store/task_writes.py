"""One task's pending writes as SQL, inside the group commit's transaction.

The rows are the SDK's own (`tasks`, `task_versions`, `task_events`, as
`VersionedDatabaseTaskStore` writes them), so the SDK reads what is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from a2a.server.cluster import ConcurrentTaskModificationError
from a2a.server.models import TaskEventModel, TaskModel, TaskVersionModel
from a2a.types.a2a_pb2 import Artifact, Task, TaskState
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from molecule_runtime.states import TERMINAL_STATES

# Events of one task streamed but not stored yet, at most; also the versions a
# new writer of a task skips, so its events come after any a crashed writer streamed.
MAX_UNSTORED = 64


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


async def stored_version(conn: AsyncConnection, task_id: str) -> int | None:
    """The version of `task_id` the database holds (None: not there)."""
    return (
        await conn.execute(select(_VERSIONS.c.version).where(_VERSIONS.c.task_id == task_id))
    ).scalar_one_or_none()


# What a task's row was made of at its last write: per part of the row, the
# serialized message's (length, hash) and its JSON dict.
RowCache = dict[str, tuple[tuple[int, int], Any]]
_TEXT_ONLY_ARTIFACT = frozenset({"artifact_id", "name", "description", "parts"})


def _as_dict(message: Message, cache: RowCache | None, slot: str) -> Any:
    """MessageToDict, reused while the message is unchanged (a task row is written
    again at every commit while it streams; most of it does not change)."""
    if cache is None:
        return MessageToDict(message)
    data = message.SerializeToString(deterministic=True)
    key = (len(data), hash(data))
    hit = cache.get(slot)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = _artifact_dict(message) if isinstance(message, Artifact) else MessageToDict(message)
    cache[slot] = (key, value)
    return value


def _artifact_dict(artifact: Artifact) -> dict[str, Any]:
    """MessageToDict of an artifact, built directly when it holds text parts only
    (a streamed answer changes at every commit)."""
    fields = {f.name for f, _ in artifact.ListFields()}
    if not fields <= _TEXT_ONLY_ARTIFACT or any(
        [f.name for f, _ in part.ListFields()] != ["text"] for part in artifact.parts
    ):
        return MessageToDict(artifact)
    out: dict[str, Any] = {}
    if artifact.artifact_id:
        out["artifactId"] = artifact.artifact_id
    if artifact.name:
        out["name"] = artifact.name
    if artifact.description:
        out["description"] = artifact.description
    if artifact.parts:
        out["parts"] = [{"text": part.text} for part in artifact.parts]
    return out


def task_row(task: Task, owner: str, cache: RowCache | None = None) -> dict[str, object]:
    """The `tasks` row of a task, as the SDK's DatabaseTaskStore writes it."""
    return {
        "id": task.id,
        "context_id": task.context_id,
        "kind": "task",
        "owner": owner,
        "last_updated": (
            task.status.timestamp.ToDatetime() if task.status.HasField("timestamp") else None
        ),
        "status": _as_dict(task.status, cache, "status"),
        "artifacts": [_as_dict(a, cache, f"a{i}") for i, a in enumerate(task.artifacts)],
        "history": [_as_dict(m, cache, f"h{i}") for i, m in enumerate(task.history)],
        "metadata": _as_dict(task.metadata, cache, "metadata") if task.metadata.fields else None,
        "protocol_version": "1.0",
    }


async def write_pending(conn: AsyncConnection, item: PendingWrite) -> int | Exception:
    """Write one task's pending events; its new stored version, or the conflict."""
    if item.cancel:
        stored = await _cancelable_version(conn, item)
        if stored is None:
            return ConcurrentTaskModificationError(item.task_id)
        upto, events = item.upto, item.events
        if stored != item.expect:
            # Another writer moved the task on: its cancel goes after
            # whatever that writer may have streamed.
            upto = stored + MAX_UNSTORED + 1
            events = [(upto, events[-1][1])] if events else []
        item = replace(item, expect=stored, upto=upto, events=events, cancel=False)
    try:
        await _write_plain(conn, [item])
    except BatchConflict:
        return ConcurrentTaskModificationError(item.task_id)
    return item.upto


class BatchConflict(Exception):
    """Some task of a batch was moved on by another writer; which one is found by
    writing each task alone."""


async def write_batch(conn: AsyncConnection, items: list[PendingWrite]) -> list[int | Exception]:
    """Write many tasks' pending events with a handful of statements, whatever their number.

    Every statement is a round trip through the event loop; under load one per
    task and table made a commit of 100 tasks take seconds. A conflict on any
    task raises `BatchConflict` (the caller rolls back and writes one by one).
    """
    outcomes: dict[str, int | Exception] = {}
    for item in items:
        if item.cancel:  # rare, and each needs its stored state read first
            outcome = await write_pending(conn, item)
            if isinstance(outcome, Exception):
                raise BatchConflict(item.task_id)
            outcomes[item.task_id] = outcome
    plain = [item for item in items if not item.cancel]
    await _write_plain(conn, plain)
    outcomes.update((item.task_id, item.upto) for item in plain)
    return [outcomes[item.task_id] for item in items]


async def _write_plain(conn: AsyncConnection, items: list[PendingWrite]) -> None:
    """New tasks inserted, the others moved from `expect` to `upto` (or `BatchConflict`),
    then every task's events: a few statements for any number of tasks."""
    new = [item for item in items if item.expect == 0]
    moved = [item for item in items if item.expect != 0]
    if new:
        await conn.execute(
            insert(_VERSIONS),
            [{"task_id": i.task_id, "owner": i.owner, "version": i.upto} for i in new],
        )
        await conn.execute(insert(_TASKS), [i.row for i in new])
    if moved:
        await _move_versions(conn, moved)
        await conn.execute(
            update(_TASKS).where(
                and_(_TASKS.c.id == bindparam("b_id"), _TASKS.c.owner == bindparam("b_owner"))
            ),
            [
                {"b_id": i.task_id, "b_owner": i.owner}
                | {k: v for k, v in i.row.items() if k not in ("id", "owner")}
                for i in moved
            ],
        )
    events = [
        {"task_id": i.task_id, "owner": i.owner, "task_version": version, "event_data": data}
        for i in items
        for version, data in i.events
    ]
    if events:
        await conn.execute(insert(_EVENTS), events)


async def _move_versions(conn: AsyncConnection, items: list[PendingWrite]) -> None:
    """Every task's version from `expect` to `upto`, or `BatchConflict`."""
    if conn.dialect.supports_sane_multi_rowcount:
        result = await conn.execute(
            update(_VERSIONS)
            .where(
                and_(
                    _VERSIONS.c.task_id == bindparam("b_id"),
                    _VERSIONS.c.owner == bindparam("b_owner"),
                    _VERSIONS.c.version == bindparam("b_expect"),
                )
            )
            .values(version=bindparam("b_upto")),
            [
                {"b_id": i.task_id, "b_owner": i.owner, "b_expect": i.expect, "b_upto": i.upto}
                for i in items
            ],
        )
        if result.rowcount != len(items):
            raise BatchConflict()
        return
    # No per-batch row count (asyncpg): lock the rows, compare, then move them.
    rows = await conn.execute(
        select(_VERSIONS.c.task_id, _VERSIONS.c.owner, _VERSIONS.c.version)
        .where(_VERSIONS.c.task_id.in_([i.task_id for i in items]))
        .with_for_update()
    )
    stored = {(r.task_id, r.owner): r.version for r in rows}
    if any(stored.get((i.task_id, i.owner)) != i.expect for i in items):
        raise BatchConflict()
    await conn.execute(
        update(_VERSIONS)
        .where(
            and_(_VERSIONS.c.task_id == bindparam("b_id"), _VERSIONS.c.owner == bindparam("b_owner"))
        )
        .values(version=bindparam("b_upto")),
        [{"b_id": i.task_id, "b_owner": i.owner, "b_upto": i.upto} for i in items],
    )


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
