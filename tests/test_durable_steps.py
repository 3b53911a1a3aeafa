"""Durable steps across a crash and a deploy: a step whose side effect finished is
never run again; the retry replays it from the task store's journal.

The adapter (tests/fixtures/steps_adapter.py) appends one line to a file per
step, streaming text between steps; the process running it is killed (SIGKILL,
then restarted) or stopped (SIGTERM, a second replica up) after step 3.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import GetTaskRequest, TaskState
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from molecule_runtime.store.steps_table import STEPS as JOURNAL
from tests.support.a2a import BackgroundStream, make_client, task_text, wait_terminal
from tests.support.durable import own_temporal, scripted_message
from tests.support.procs import ServerProcess

pytestmark = pytest.mark.temporal

STEPS = 6
ADAPTER = Path(__file__).resolve().parent / "fixtures" / "steps_adapter.py"
EXPECTED = "".join(f"s{i}:{i} " for i in range(STEPS))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    return request.getfixturevalue("postgres").database()


def env_for(temporal_address: str, store_url: str) -> dict[str, str]:
    return {
        **own_temporal(temporal_address),
        "ADAPTER_MODULE": str(ADAPTER),
        "TASK_STORE_URL": store_url,
        "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
        "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2",
        "TEMPORAL_SCHEDULE_TO_START_TIMEOUT": "3",
        "MOLECULE_SHUTDOWN_GRACE": "1",
    }


async def wait_recorded(store_url: str, count: int, timeout: float = 60) -> None:
    """Until `count` steps are journaled. A step whose side effect finished but whose
    result was not stored yet when the process died runs again (docs/adapters.md):
    the kill must land after step `count` was recorded to show none ever repeats."""
    engine = create_async_engine(store_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                async with engine.connect() as conn:
                    done = (await conn.execute(select(func.count()).select_from(JOURNAL))).scalar_one()
            except Exception:  # the table is created at the server's start
                done = 0
            if done >= count:
                return
            assert time.monotonic() < deadline, "the steps did not run"
            await asyncio.sleep(0.02)
    finally:
        await engine.dispose()


def check_once(effects: Path, task_id: str) -> None:
    lines = effects.read_text().splitlines()
    assert lines == [f"{task_id} step {i}" for i in range(STEPS)], lines
    attempts = (effects.parent / (effects.name + ".attempts")).read_text().splitlines()
    assert len(attempts) >= 2, attempts  # the crash did cut an attempt short


async def test_kill_after_step_3_each_side_effect_happens_once(
    temporal_server, store_url: str, server_factory, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    env = env_for(temporal_server.address, store_url)
    server: ServerProcess = server_factory(env, workdir=tmp_path / "a")
    client = await make_client(server.url)
    stream = BackgroundStream(
        client, scripted_message(steps=STEPS, delay=0.3, effects=str(effects)), may_break=True
    )
    await wait_recorded(store_url, 3)
    server.kill()
    restarted = server_factory(env, workdir=tmp_path / "a", port=server.port)
    client2 = await make_client(restarted.url)
    try:
        task = await wait_terminal(client2, stream.task_id, timeout=90)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task_text(task) == EXPECTED
        check_once(effects, task.id)
    finally:
        await stream.finish(15)
        await client.close()
        await client2.close()


async def test_sigterm_after_step_3_the_other_replica_replays_the_finished_steps(
    temporal_server, store_url: str, server_factory, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    env = env_for(temporal_server.address, store_url)
    replica_a = server_factory({**env, "MOLECULE_INSTANCE_ID": "a"}, workdir=tmp_path / "a")
    replica_b = server_factory({**env, "MOLECULE_INSTANCE_ID": "b"}, workdir=tmp_path / "b")
    client_a = await make_client(replica_a.url)
    client_b = await make_client(replica_b.url)
    stream = BackgroundStream(
        client_a, scripted_message(steps=STEPS, delay=0.3, effects=str(effects)), may_break=True
    )
    try:
        await wait_recorded(store_url, 3)
        assert replica_a.proc is not None
        os.kill(replica_a.proc.pid, signal.SIGTERM)
        task = await wait_terminal(client_b, stream.task_id, timeout=90)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
        assert task_text(task) == EXPECTED
        check_once(effects, task.id)
        stored = await client_b.get_task(GetTaskRequest(id=task.id))
        assert task_text(stored) == EXPECTED
    finally:
        await stream.finish(15)
        await client_a.close()
        await client_b.close()
