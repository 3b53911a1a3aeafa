"""Event-log retention: the logged events of finished tasks older than
MOLECULE_EVENT_RETENTION are pruned; tasks themselves stay readable."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from a2a.server.cluster import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.server.models import TaskEventModel
from a2a.types.a2a_pb2 import Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from sqlalchemy import func, select

from molecule_runtime.store import open_stores, prune_events
from molecule_runtime.store.steps_table import RecordedStep

A2A = {"A2A-Version": "1.0", "Content-Type": "application/json"}


async def _write_task(stores, state: TaskState, when: datetime) -> str:
    """A task with two logged events, its status stamped `when`."""
    task_id = str(uuid.uuid4())
    context = ServerCallContext()
    status = TaskStatus(state=TaskState.TASK_STATE_WORKING)
    status.timestamp.FromDatetime(when)
    task = Task(id=task_id, context_id="ctx", status=status)
    version = await stores.tasks.save(
        task, event=task, prev_version=TaskVersion.MISSING, context=context
    )
    final = TaskStatus(state=state)
    final.timestamp.FromDatetime(when)
    update = TaskStatusUpdateEvent(task_id=task_id, context_id="ctx", status=final)
    done = Task()
    done.CopyFrom(task)
    done.status.CopyFrom(final)
    await stores.tasks.save(done, event=update, prev_version=version, context=context)
    return task_id


async def _logged(stores, task_id: str) -> int:
    async with stores.engine.connect() as conn:
        return (
            await conn.execute(
                select(func.count()).select_from(TaskEventModel).where(TaskEventModel.task_id == task_id)
            )
        ).scalar_one()




@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    return request.getfixturevalue("postgres").database()


async def test_prune_removes_only_old_finished_tasks_events(store_url: str) -> None:
    stores = await open_stores(store_url, event_retention=0)
    try:
        old = datetime.now(UTC) - timedelta(days=10)
        old_done = await _write_task(stores, TaskState.TASK_STATE_COMPLETED, old)
        old_working = await _write_task(stores, TaskState.TASK_STATE_INPUT_REQUIRED, old)
        new_done = await _write_task(stores, TaskState.TASK_STATE_FAILED, datetime.now(UTC))
        assert [await _logged(stores, t) for t in (old_done, old_working, new_done)] == [2, 2, 2]

        steps = stores.tasks.steps
        for task_id in (old_done, old_working, new_done):
            await steps.record(task_id, f"{task_id}-answer", RecordedStep(0, "mail", '"sent"'))

        deleted = await prune_events(stores.engine, datetime.now(UTC) - timedelta(days=7), steps)
        assert deleted == 2
        assert [await _logged(stores, t) for t in (old_done, old_working, new_done)] == [0, 2, 2]
        # A step journal goes with the event log: a finished task is never retried.
        journals = [len(await steps.load(t, f"{t}-answer")) for t in (old_done, old_working, new_done)]
        assert journals == [0, 1, 1]
        # The task itself is untouched.
        stored = await stores.tasks.get(old_done, ServerCallContext())
        assert stored is not None and stored.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert await prune_events(stores.engine, datetime.now(UTC) - timedelta(days=7)) == 0
    finally:
        await stores.aclose()


async def test_server_prunes_and_replay_falls_back_to_the_final_task(server_factory) -> None:
    server = server_factory({"RUNTIME": "echo", "MOLECULE_EVENT_RETENTION": "1"})
    async with httpx.AsyncClient(timeout=30) as http:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": {"role": "ROLE_USER", "messageId": "m", "parts": [{"text": "a b c"}]}},
        }
        task = (await http.post(f"{server.url}/", headers=A2A, json=body)).json()["result"]["task"]

        async def replay() -> list[tuple[str, dict]]:
            response = await http.get(
                f"{server.url}/rest/tasks/{task['id']}:subscribe",
                headers={**A2A, "Last-Event-ID": "0"},
            )
            frames, event_id = [], ""
            for line in response.text.splitlines():
                if line.startswith("id:"):
                    event_id = line.removeprefix("id:").strip()
                elif line.startswith("data:"):
                    frames.append((event_id, json.loads(line.removeprefix("data:"))))
            return frames

        assert len(await replay()) > 2  # the whole log, before the retention passes
        deadline = time.monotonic() + 15
        while len(frames := await replay()) != 1:
            assert time.monotonic() < deadline, frames
            await asyncio.sleep(0.5)
        # Pruned: the finished task itself, under its latest offset.
        event_id, payload = frames[0]
        assert payload["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        assert payload["task"]["artifacts"][0]["parts"]
        assert int(event_id) > 1
