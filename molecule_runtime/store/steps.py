"""The step journal: results of an adapter's durable steps, per task turn, in the
task store's own database (or in memory with the memory store).

A row is written once, when a step finishes, in a transaction of its own and
before `step()` returns; a later attempt of the same turn reads the turn's rows
and replays them. Two attempts that record the same step at once (a stalled
attempt and its successor) keep the first result: the insert skips a row that
exists, and the writer reads back the one that won.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.store.health import StoreHealth, until_stored

# Largest JSON result a step may store unless MOLECULE_STEP_MAX_BYTES says otherwise.
DEFAULT_STEP_MAX_BYTES = 1024 * 1024

_METADATA = MetaData()
STEPS = Table(
    "molecule_task_steps",
    _METADATA,
    Column("task_id", String(255), primary_key=True),
    Column("turn", String(300), primary_key=True),  # the turn's answer artifact id
    Column("seq", Integer, primary_key=True),  # 0, 1, ... within the turn
    Column("name", String(255), nullable=False),
    Column("result", Text, nullable=False),  # JSON
    Column("recorded_at", DateTime, nullable=False),
)


@dataclass(frozen=True)
class RecordedStep:
    seq: int
    name: str
    result: str  # JSON text


class StepStore:
    """Recorded steps; in memory when `engine` is None (the memory task store)."""

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        health: StoreHealth | None = None,
        *,
        max_bytes: int = DEFAULT_STEP_MAX_BYTES,
    ) -> None:
        self._engine = engine
        self._health = health
        self.max_bytes = max_bytes  # largest JSON result a step may store
        self._memory: dict[tuple[str, str], dict[int, RecordedStep]] = {}

    async def initialize(self) -> None:
        if self._engine is not None:
            async with self._engine.begin() as conn:
                await conn.run_sync(_METADATA.create_all)

    async def load(self, task_id: str, turn: str) -> list[RecordedStep]:
        """The turn's recorded steps, in order."""
        if self._engine is None:
            return sorted(self._memory.get((task_id, turn), {}).values(), key=lambda s: s.seq)
        engine = self._engine

        async def read() -> list[RecordedStep]:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(STEPS.c.seq, STEPS.c.name, STEPS.c.result)
                    .where(STEPS.c.task_id == task_id, STEPS.c.turn == turn)
                    .order_by(STEPS.c.seq)
                )
                return [RecordedStep(seq, name, result) for seq, name, result in rows]

        return await until_stored(read, self._health)

    async def record(self, task_id: str, turn: str, step: RecordedStep) -> RecordedStep:
        """Store `step` unless its place is taken; the step stored at that place."""
        if self._engine is None:
            steps = self._memory.setdefault((task_id, turn), {})
            return steps.setdefault(step.seq, step)
        engine = self._engine
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        values = {
            "task_id": task_id,
            "turn": turn,
            "seq": step.seq,
            "name": step.name,
            "result": step.result,
            "recorded_at": datetime.now(UTC).replace(tzinfo=None),
        }

        async def write() -> RecordedStep:
            async with engine.begin() as conn:
                done = await conn.execute(insert(STEPS).values(**values).on_conflict_do_nothing())
                if done.rowcount == 1:
                    return step
                row = (
                    await conn.execute(
                        select(STEPS.c.name, STEPS.c.result).where(
                            STEPS.c.task_id == task_id, STEPS.c.turn == turn, STEPS.c.seq == step.seq
                        )
                    )
                ).one()
                return RecordedStep(step.seq, row.name, row.result)

        return await until_stored(write, self._health)

    async def delete(self, task_ids: Iterable[str]) -> int:
        """Forget the journals of these tasks (retention)."""
        ids = list(task_ids)
        if self._engine is None:
            keys = [k for k in self._memory if k[0] in set(ids)]
            for key in keys:
                del self._memory[key]
            return len(keys)
        deleted = 0
        for start in range(0, len(ids), 500):
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(STEPS).where(STEPS.c.task_id.in_(ids[start : start + 500])))
                deleted += result.rowcount or 0
        return deleted
