"""The step journal's table and the records read from it (store/steps.py writes
and reads them): one row per recorded step of a task turn."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from a2a.types.a2a_pb2 import Artifact
from google.protobuf.json_format import ParseDict
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, inspect, text
from sqlalchemy.engine import Connection

METADATA = MetaData()
STEPS = Table(
    "molecule_task_steps",
    METADATA,
    Column("task_id", String(255), primary_key=True),
    Column("turn", String(300), primary_key=True),  # the turn's answer artifact id
    Column("seq", Integer, primary_key=True),  # 0, 1, ... within the turn
    Column("name", String(255), nullable=False),
    Column("result", Text, nullable=False),  # JSON
    Column("recorded_at", DateTime, nullable=False),
    # Added later: NULL in rows written before (tables get them at start-up).
    Column("attempt", Integer, nullable=True),  # the attempt that recorded it
    Column("replayed_by", Text, nullable=True),  # "2,3": attempts that replayed it
)
_ADDED_COLUMNS = ("attempt", "replayed_by")


@dataclass(frozen=True)
class RecordedStep:
    seq: int
    name: str
    result: str  # JSON text
    attempt: int | None = None  # the attempt that recorded it (None: not known)


@dataclass(frozen=True)
class JournalEntry:
    """One recorded step as the journal tells its story (its result left out)."""

    turn: str  # the turn's answer artifact id
    seq: int
    name: str
    recorded_at: datetime  # UTC
    attempt: int | None  # None: recorded before the journal kept it
    replayed_by: tuple[int, ...] | None  # attempts that replayed it; None: not known


@dataclass
class StoredTurn:
    """What the store holds of one task turn when an attempt starts."""

    steps: list[RecordedStep]
    # The turn's artifacts (its answer and named ones) as committed; None when
    # this store cannot tell (the memory store: the caller reads the task).
    artifacts: list[Artifact] | None = None


def add_columns(conn: Connection) -> None:
    """Tables created before the attempt columns get them (create_all adds no columns)."""
    present = {c["name"] for c in inspect(conn).get_columns(STEPS.name)}
    for name in _ADDED_COLUMNS:
        if name not in present:
            kind = STEPS.c[name].type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {STEPS.name} ADD COLUMN {name} {kind}"))


def replays(value: str | None) -> tuple[int, ...]:
    """The attempt numbers of a `replayed_by` value, each once, lowest first (attempts
    of one turn may note their replays in either order)."""
    numbers = [int(item) for item in (value or "").split(",") if item.strip().isdigit()]
    return tuple(sorted(set(numbers)))


def turn_artifacts(rows: Any, answer_id: str) -> list[Artifact]:
    """The stored artifacts (JSON as the SDK writes them) of the turn whose answer is `answer_id`."""
    found: list[Artifact] = []
    for item in rows or []:
        if not isinstance(item, dict):
            continue
        artifact_id = str(item.get("artifactId", ""))
        if artifact_id == answer_id or artifact_id.startswith(answer_id + "."):
            found.append(ParseDict(item, Artifact(), ignore_unknown_fields=True))
    return found
