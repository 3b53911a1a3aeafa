"""Retention: the replay of long-finished tasks is deleted (the tasks stay), and old
message-id claims are forgotten."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from a2a.server.models import TaskEventModel, TaskModel
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.states import TERMINAL_STATE_NAMES
from molecule_runtime.store.claims_table import now_utc
from molecule_runtime.store.message_ids import MessageIds
from molecule_runtime.store.steps import StepStore
from molecule_runtime.store.steps_table import STEPS

log = logging.getLogger(__name__)


async def prune_events(engine: AsyncEngine, older_than: datetime, steps: StepStore | None = None) -> int:
    """Delete the logged events (and step journals) of finished tasks last updated
    before `older_than`.

    The tasks themselves stay (GetTask, ListTasks); only their replay goes. A
    journal is of use to a later attempt only: a finished task has none.
    """
    # The SDK stores last_updated as naive UTC.
    cutoff = older_than.astimezone(UTC).replace(tzinfo=None)
    if steps is not None:
        await steps.delete(await _finished_with(engine, STEPS.c.task_id, cutoff))
    finished = await _finished_with(engine, TaskEventModel.task_id, cutoff)
    deleted = 0
    for start in range(0, len(finished), 500):
        batch = finished[start : start + 500]
        async with engine.begin() as conn:
            result = await conn.execute(
                delete(TaskEventModel).where(TaskEventModel.task_id.in_(batch))
            )
            deleted += result.rowcount or 0
    return deleted


async def _finished_with(engine: AsyncEngine, task_id_column: Any, cutoff: datetime) -> list[str]:
    """Ids of finished tasks last updated before `cutoff` that have rows in `task_id_column`'s table."""
    having = select(task_id_column).distinct().subquery()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(TaskModel.id, TaskModel.status)
                .join(having, having.c[task_id_column.name] == TaskModel.id)
                .where(TaskModel.last_updated < cutoff)
            )
        ).all()
    return [
        task_id
        for task_id, status in rows
        if isinstance(status, dict) and status.get("state") in TERMINAL_STATE_NAMES
    ]


async def prune_periodically(engine: AsyncEngine, retention: float, steps: StepStore | None = None) -> None:
    # Often enough that rows outlive the retention by a fraction of it at most.
    interval = min(max(retention / 4, 1.0), 3600.0)
    while True:
        await asyncio.sleep(interval)
        try:
            cutoff = datetime.now(UTC) - timedelta(seconds=retention)
            deleted = await prune_events(engine, cutoff, steps)
            if deleted:
                log.info("pruned %d logged events of tasks finished before %s", deleted, cutoff)
        except Exception:
            log.exception("pruning the task event log failed; retrying later")


async def prune_message_ids_periodically(message_ids: MessageIds, retention: float) -> None:
    """Forget message-id claims older than `retention` (MOLECULE_IDEMPOTENCY_RETENTION)."""
    interval = min(max(retention / 4, 1.0), 3600.0)
    while True:
        await asyncio.sleep(interval)
        try:
            deleted = await message_ids.prune(now_utc() - timedelta(seconds=retention))
            if deleted:
                log.info("forgot %d message ids older than %.0f s", deleted, retention)
        except Exception:
            log.exception("pruning message ids failed; retrying later")
