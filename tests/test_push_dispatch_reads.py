"""Push configs read for dispatch, on a real SQLite file and a real PostgreSQL server: a task
without configs costs one small query; a task with configs gets exactly what the SDK's store
returns (also encrypted, and across owners). The question "has this task any configs?" asked
by many tasks at once: the questions asked while one is answered go together in one
statement, every answer is right, and a config stored before the question is always seen
(each answer comes from a statement begun after its question)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from a2a.server.tasks import DatabasePushNotificationConfigStore
from a2a.types.a2a_pb2 import TaskPushNotificationConfig
from cryptography.fernet import Fernet
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from molecule_runtime.store.owners import acting_for
from molecule_runtime.store.push_configs import MAX_IDS_PER_STATEMENT, DatabasePushConfigs


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    else:
        url = request.getfixturevalue("postgres").database()
    made = create_async_engine(url)
    try:
        yield made
    finally:
        await made.dispose()


def statements(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        seen.append(sql)

    return seen


@pytest.mark.parametrize("encrypted", [False, True])
async def test_dispatch_reads_configs_only_of_tasks_that_have_any(
    engine: AsyncEngine, encrypted: bool
) -> None:
    key = Fernet.generate_key().decode() if encrypted else None
    configs = DatabasePushConfigs(engine, encryption_key=key)
    await configs.initialize()
    sdk = DatabasePushNotificationConfigStore(engine, encryption_key=key)
    await sdk.initialize()
    for owner, config_id in (("alice", "a1"), ("alice", "a2"), ("bob", "b1")):
        await configs.set_info(
            "t1",
            TaskPushNotificationConfig(id=config_id, url=f"https://example.com/{config_id}", token="tok"),
            acting_for(owner),
        )

    seen = statements(engine)
    assert await configs.get_info_for_dispatch("no-configs") == []
    assert len(seen) == 1 and "LIMIT" in seen[0].upper(), seen  # one existence query, nothing else

    got = await configs.get_info_for_dispatch("t1")
    expected = await sdk.get_info_for_dispatch("t1")
    assert sorted(c.id for c in got) == ["a1", "a2", "b1"]
    assert sorted(got, key=lambda c: c.id) == sorted(expected, key=lambda c: c.id)
    assert {c.token for c in got} == {"tok"}

    await configs.delete_info("t1", acting_for("alice"))
    await configs.delete_info("t1", acting_for("bob"))
    assert await configs.get_info_for_dispatch("t1") == []


def existence_queries(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        if "DISTINCT" in sql.upper():
            seen.append(sql)

    return seen


async def add_config(configs: DatabasePushConfigs, task_id: str) -> None:
    await configs.set_info(
        task_id,
        TaskPushNotificationConfig(id=f"c-{task_id}", url=f"https://example.com/{task_id}", token="tok"),
        acting_for("alice"),
    )


async def test_questions_asked_together_share_one_statement(engine: AsyncEngine) -> None:
    configs = DatabasePushConfigs(engine)
    await configs.initialize()
    with_configs = {f"t{i}" for i in range(0, 1200, 7)}
    for task_id in with_configs:
        await add_config(configs, task_id)
    seen = existence_queries(engine)

    asked = [f"t{i}" for i in range(1200)]
    answers = await asyncio.gather(*(configs.get_info_for_dispatch(t) for t in asked))

    assert {t for t, got in zip(asked, answers, strict=True) if got} == with_configs
    assert all(len(got) == 1 and got[0].id == f"c-{t}" for t, got in zip(asked, answers, strict=True) if got)
    # 1200 questions: the first alone, the rest together, in statements of at most MAX_IDS_PER_STATEMENT.
    assert 2 <= len(seen) <= 2 + 1199 // MAX_IDS_PER_STATEMENT, len(seen)


async def test_a_config_stored_before_the_question_is_seen(engine: AsyncEngine) -> None:
    configs = DatabasePushConfigs(engine)
    await configs.initialize()
    for round_ in range(20):
        # Questions keep the asker busy while the config is stored; the question asked
        # after it must see it, whatever statement was already on its way.
        busy = [asyncio.ensure_future(configs.get_info_for_dispatch(f"other-{round_}-{i}")) for i in range(5)]
        await add_config(configs, f"late-{round_}")
        got = await configs.get_info_for_dispatch(f"late-{round_}")
        assert [c.id for c in got] == [f"c-late-{round_}"]
        assert all(r == [] for r in await asyncio.gather(*busy))


async def test_a_cancelled_question_leaves_the_others_answered(engine: AsyncEngine) -> None:
    configs = DatabasePushConfigs(engine)
    await configs.initialize()
    await add_config(configs, "kept")
    first = asyncio.ensure_future(configs.get_info_for_dispatch("gone"))
    second = asyncio.ensure_future(configs.get_info_for_dispatch("kept"))
    await asyncio.sleep(0)
    first.cancel()
    assert [c.id for c in await second] == ["c-kept"]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await configs.get_info_for_dispatch("gone") == []
