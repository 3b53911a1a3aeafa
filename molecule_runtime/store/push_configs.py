"""Push configs as clients register them: a bounded number per task, and read
for dispatch only from tasks that have any.

Every state change of a task is POSTed to each of its webhooks, so without a
bound one client could register thousands of configs on a task and make the
agent a request amplifier. Replacing a config (same id) is always allowed.
The count is checked and the config stored under one lock per task, so
concurrent registrations in this process cannot overshoot it.

Every state change of every task asks for its configs, and almost no task has
any: the database store first asks whether the task has one, with a statement
built once, and only then reads them through the SDK (which builds its ORM query
anew per call: ~7% of a busy event loop during a burst of new tasks). The
questions asked while one is being answered go together in the next statement:
one query for them all instead of a pooled connection each (under a burst the
checkouts beyond the pool's 5 opened and closed a SQLite connection each time).
Every answer still comes from a statement begun after its question.
"""

from __future__ import annotations

import asyncio

from a2a.server.context import ServerCallContext
from a2a.server.tasks import DatabasePushNotificationConfigStore, PushNotificationConfigStore
from a2a.types.a2a_pb2 import TaskPushNotificationConfig
from a2a.utils.errors import InvalidParamsError
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from molecule_runtime.keyed_lock import KeyedLock

# Task ids per statement (SQLite allows 32766 bound parameters, asyncpg 32767).
MAX_IDS_PER_STATEMENT = 500


class DatabasePushConfigs(DatabasePushNotificationConfigStore):
    """The SDK's database store; dispatch reads a task's configs only if it has any."""

    def __init__(self, engine: AsyncEngine, *, encryption_key: str | None = None) -> None:
        super().__init__(engine, encryption_key=encryption_key)
        table = self.config_model.__table__  # type: ignore[attr-defined]
        self._with_configs = (
            select(table.c.task_id)
            .where(table.c.task_id.in_(bindparam("task_ids", expanding=True)))
            .distinct()
            .limit(MAX_IDS_PER_STATEMENT)  # a bound, not a cut: at most one row per id asked
        )
        # The questions not yet sent: their task ids and the answer they share.
        self._asked: set[str] = set()
        self._answer: asyncio.Future[set[str]] | None = None
        self._asker: asyncio.Task[None] | None = None

    async def get_info_for_dispatch(self, task_id: str) -> list[TaskPushNotificationConfig]:
        if not await self._has_configs(task_id):
            return []
        return await super().get_info_for_dispatch(task_id)

    async def _has_configs(self, task_id: str) -> bool:
        if self._answer is None:
            self._answer = asyncio.get_running_loop().create_future()
        answer = self._answer
        self._asked.add(task_id)
        if self._asker is None or self._asker.done():
            self._asker = asyncio.create_task(self._ask_all())
        # Shielded: a caller that is cancelled must not cancel the others' answer.
        return task_id in await asyncio.shield(answer)

    async def _ask_all(self) -> None:
        """Answers the questions asked so far in one statement, then those asked meanwhile."""
        while self._answer is not None:
            asked, answer = self._asked, self._answer
            self._asked, self._answer = set(), None
            try:
                found: set[str] = set()
                ids = sorted(asked)
                async with self.engine.connect() as conn:
                    for start in range(0, len(ids), MAX_IDS_PER_STATEMENT):
                        rows = await conn.execute(
                            self._with_configs, {"task_ids": ids[start : start + MAX_IDS_PER_STATEMENT]}
                        )
                        found.update(row[0] for row in rows)
            except Exception as exc:
                if not answer.done():
                    answer.set_exception(exc)
                    answer.exception()  # retrieved: a caller gone meanwhile must not log it
            except BaseException:
                # Cancelled (shutdown): these questions and those asked meanwhile stay unanswered.
                answer.cancel()
                if self._answer is not None:
                    self._answer.cancel()
                    self._asked, self._answer = set(), None
                raise
            else:
                if not answer.done():
                    answer.set_result(found)


class BoundedPushConfigs(PushNotificationConfigStore):
    def __init__(self, inner: PushNotificationConfigStore, max_per_task: int) -> None:
        self.inner = inner
        self.max_per_task = max_per_task
        self._locks: KeyedLock[str] = KeyedLock()  # per task id

    async def set_info(
        self,
        task_id: str,
        notification_config: TaskPushNotificationConfig,
        context: ServerCallContext,
    ) -> TaskPushNotificationConfig | None:
        config_id = notification_config.id or task_id  # the SDK's default id
        async with self._locks.holding(task_id):
            existing = await self.inner.get_info(task_id, context)
            if config_id not in {c.id for c in existing} and len(existing) >= self.max_per_task:
                raise InvalidParamsError(
                    message=f"This task already has {len(existing)} push notification configs, "
                    f"the most allowed (MOLECULE_PUSH_MAX_CONFIGS_PER_TASK={self.max_per_task}); "
                    "delete one or replace one (same id)."
                )
            return await self.inner.set_info(task_id, notification_config, context)

    async def get_info(
        self, task_id: str, context: ServerCallContext
    ) -> list[TaskPushNotificationConfig]:
        return await self.inner.get_info(task_id, context)

    async def get_info_for_dispatch(self, task_id: str) -> list[TaskPushNotificationConfig]:
        return await self.inner.get_info_for_dispatch(task_id)

    async def delete_info(
        self, task_id: str, context: ServerCallContext, config_id: str | None = None
    ) -> None:
        await self.inner.delete_info(task_id, context, config_id)
