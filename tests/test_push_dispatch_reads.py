"""Push configs read for dispatch, on a real SQLite file and a real PostgreSQL server: a task
without configs costs one small query; a task with configs gets exactly what the SDK's store
returns (also encrypted, and across owners)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from a2a.server.tasks import DatabasePushNotificationConfigStore
from a2a.types.a2a_pb2 import TaskPushNotificationConfig
from cryptography.fernet import Fernet
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from molecule_runtime.store.owners import acting_for
from molecule_runtime.store.push_configs import DatabasePushConfigs


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
