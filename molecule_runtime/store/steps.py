"""The step journal: results of an adapter's durable steps, per task turn, in the
task store's own database (or in memory with the memory store).

A row is written once, when a step finishes, in a transaction of its own and
before `step()` returns; a later attempt of the same turn reads the turn's rows
and replays them. Two attempts that record the same step at once (a stalled
attempt and its successor) keep the first result: the insert skips a row that
exists, and the writer reads back the one that won.

Each row also says which attempt recorded it and which later attempts replayed
it (`replayed_by`, their numbers comma-separated, written after the replay and
off the adapter's path): what the console's timeline shows. Rows written before
these columns existed have neither (NULL: not known).

The journal's store is also where an attempt learns the rest of its turn's
durable state: the turn's artifacts as the task store holds them (what earlier
attempts streamed and stored, `TaskInput.partial`), and which tasks stream
write-ahead (a chunk reaches a client only once it is stored).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from a2a.server.models import TaskModel
from sqlalchemy import (
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.store.health import StoreHealth, until_stored
from molecule_runtime.store.steps_table import (
    METADATA,
    STEPS,
    JournalEntry,
    RecordedStep,
    StoredTurn,
    add_columns,
    turn_artifacts,
)
from molecule_runtime.store.steps_table import (
    replays as replayed_attempts,
)

# Largest JSON result a step may store unless MOLECULE_STEP_MAX_BYTES says otherwise.
DEFAULT_STEP_MAX_BYTES = 1024 * 1024

_TASKS = TaskModel.__table__


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
        # The memory store's recorded_at and replays, by (task, turn, seq).
        self._memory_log: dict[tuple[str, str, int], tuple[datetime, list[int]]] = {}
        # Tasks whose chunks must be committed before any client is sent them
        # (write-ahead streaming): the task store's writers consult this.
        self._write_ahead: dict[str, int] = {}

    def writes_ahead(self, task_id: str) -> bool:
        """True while an attempt of `task_id` streams write-ahead: an artifact
        update of this task is streamed (and served to resuming readers) only
        once it is committed."""
        return task_id in self._write_ahead

    def stream_write_ahead(self, task_id: str, on: bool) -> None:
        """Start (or end) write-ahead streaming for one attempt of `task_id`;
        counted, since a stalled attempt and its successor may overlap."""
        count = self._write_ahead.get(task_id, 0) + (1 if on else -1)
        if count > 0:
            self._write_ahead[task_id] = count
        else:
            self._write_ahead.pop(task_id, None)

    async def initialize(self) -> None:
        if self._engine is not None:
            async with self._engine.begin() as conn:
                await conn.run_sync(METADATA.create_all)
                await conn.run_sync(add_columns)

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

    async def load_turn(self, task_id: str, turn: str, *, artifacts: bool) -> StoredTurn:
        """The turn's recorded steps and, when `artifacts`, the turn's committed
        artifacts (`turn` is the answer artifact's id), in one read."""
        if self._engine is None or not artifacts:
            return StoredTurn(await self.load(task_id, turn))
        engine = self._engine

        async def read() -> StoredTurn:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(STEPS.c.seq, STEPS.c.name, STEPS.c.result)
                    .where(STEPS.c.task_id == task_id, STEPS.c.turn == turn)
                    .order_by(STEPS.c.seq)
                )
                steps = [RecordedStep(seq, name, result) for seq, name, result in rows]
                stored = (
                    await conn.execute(select(_TASKS.c.artifacts).where(_TASKS.c.id == task_id))
                ).scalar_one_or_none()
                return StoredTurn(steps, turn_artifacts(stored, turn))

        return await until_stored(read, self._health)

    async def record(self, task_id: str, turn: str, step: RecordedStep) -> RecordedStep:
        """Store `step` unless its place is taken; the step stored at that place."""
        if self._engine is None:
            steps = self._memory.setdefault((task_id, turn), {})
            self._memory_log.setdefault((task_id, turn, step.seq), (datetime.now(UTC), []))
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
            "attempt": step.attempt,
        }

        async def write() -> RecordedStep:
            async with engine.begin() as conn:
                done = await conn.execute(insert(STEPS).values(**values).on_conflict_do_nothing())
                if done.rowcount == 1:
                    return step
                row = (
                    await conn.execute(
                        select(STEPS.c.name, STEPS.c.result, STEPS.c.attempt).where(
                            STEPS.c.task_id == task_id, STEPS.c.turn == turn, STEPS.c.seq == step.seq
                        )
                    )
                ).one()
                return RecordedStep(step.seq, row.name, row.result, row.attempt)

        return await until_stored(write, self._health)

    async def replayed(self, task_id: str, turn: str, seqs: list[int], attempt: int) -> None:
        """Note that `attempt` replayed these recorded steps of the turn (one write)."""
        if not seqs:
            return
        if self._engine is None:
            for seq in seqs:
                entry = self._memory_log.get((task_id, turn, seq))
                if entry is not None:
                    entry[1].append(attempt)
            return
        engine = self._engine
        update_ = (
            update(STEPS)
            .where(STEPS.c.task_id == task_id, STEPS.c.turn == turn, STEPS.c.seq.in_(seqs))
            .values(replayed_by=func.coalesce(STEPS.c.replayed_by + ",", "") + str(attempt))
        )

        async def write() -> None:
            async with engine.begin() as conn:
                await conn.execute(update_)

        await until_stored(write, self._health)

    async def journal(self, task_id: str) -> list[JournalEntry]:
        """Every recorded step of the task, all turns, in the order they were recorded."""
        if self._engine is None:
            entries = []
            for (task, turn), steps in self._memory.items():
                if task != task_id:
                    continue
                for step in steps.values():
                    at, replays = self._memory_log.get((task, turn, step.seq), (datetime.now(UTC), []))
                    entries.append(
                        JournalEntry(
                            turn, step.seq, step.name, at, step.attempt,
                            tuple(sorted(set(replays))) if step.attempt is not None else None,
                        )
                    )
            return sorted(entries, key=lambda e: (e.recorded_at, e.seq))
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(
                    STEPS.c.turn, STEPS.c.seq, STEPS.c.name, STEPS.c.recorded_at,
                    STEPS.c.attempt, STEPS.c.replayed_by,
                )
                .where(STEPS.c.task_id == task_id)
                .order_by(STEPS.c.recorded_at, STEPS.c.seq)
            )
            return [
                JournalEntry(
                    row.turn, row.seq, row.name, row.recorded_at.replace(tzinfo=UTC), row.attempt,
                    # A row from before the journal kept attempts: its replays are not known either.
                    replayed_attempts(row.replayed_by) if row.attempt is not None else None,
                )
                for row in rows
            ]

    async def delete(self, task_ids: Iterable[str]) -> int:
        """Forget the journals of these tasks (retention)."""
        ids = list(task_ids)
        if self._engine is None:
            keys = [k for k in self._memory if k[0] in set(ids)]
            for key in keys:
                del self._memory[key]
            for entry in [k for k in self._memory_log if k[0] in set(ids)]:
                del self._memory_log[entry]
            return len(keys)
        deleted = 0
        for start in range(0, len(ids), 500):
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(STEPS).where(STEPS.c.task_id.in_(ids[start : start + 500])))
                deleted += result.rowcount or 0
        return deleted
