"""Start-up sweep: what a crashed process left unfinished is failed (direct) or started (durable)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from a2a.helpers.proto_helpers import get_message_text
from a2a.server.cluster import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import GetTaskRequest, Message, Part, Role, Task, TaskState, TaskStatus
from google.protobuf.struct_pb2 import Struct

from molecule_runtime.recovery import INTERRUPTED_DIRECT
from molecule_runtime.store import open_stores
from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import BackgroundStream, make_client, task_text, wait_terminal
from tests.support.durable import durable_env, scripted_message


async def test_direct_task_interrupted_by_a_crash_is_failed_on_restart(
    server_factory, tmp_path: Path
) -> None:
    env = {"ADAPTER_OPTIONS": json.dumps({"delay": 0.2}), "MOLECULE_INSTANCE_ID": "replica-a"}
    workdir = tmp_path / "srv"
    server = server_factory(env, workdir=workdir)
    client = await make_client(server.url)
    # The server dies under the stream.
    stream = BackgroundStream(client, scripted_message("one two three four five six"), may_break=True)
    await stream.wait_chunks(1, timeout=10)
    server.kill()
    await stream.finish(10)
    task_id = stream.task_id

    restarted = server_factory(env, workdir=workdir, port=server.port)
    client2 = await make_client(restarted.url)
    task = await wait_terminal(client2, task_id, timeout=15)
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert get_message_text(task.status.message) == INTERRUPTED_DIRECT
    await client.close()
    await client2.close()


def stored_task(instance: str, text: str, **script: object) -> Task:
    meta = Struct()
    meta.update(script)
    task_id = str(uuid.uuid4())
    task = Task(
        id=task_id,
        context_id=str(uuid.uuid4()),
        status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
        history=[
            Message(
                role=Role.ROLE_USER,
                message_id=str(uuid.uuid4()),
                task_id=task_id,
                parts=[Part(text=text)],
                metadata=meta,
            )
        ],
    )
    task.status.timestamp.GetCurrentTime()
    task.metadata.update({"molecule.instance": instance})
    return task


@pytest.mark.temporal
async def test_stored_task_whose_workflow_never_started_is_started(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = durable_env(temporal_server.address, records, MOLECULE_INSTANCE_ID="replica-a")
    workdir = tmp_path / "srv"
    # As if the process died right after storing the task, before start_workflow.
    stores = await open_stores(f"sqlite+aiosqlite:///{workdir / 'data' / 'tasks.db'}")
    mine = stored_task("replica-a", "go", chunks=2)
    theirs = stored_task("replica-b", "go", chunks=2)
    for task in (mine, theirs):
        await stores.tasks.save(
            task, prev_version=TaskVersion.MISSING, context=ServerCallContext()
        )
    await stores.aclose()

    server = server_factory(env, workdir=workdir)
    client = await make_client(server.url)
    task = await wait_terminal(client, mine.id, timeout=30)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "c0 c1 "
    assert len([r for r in read_records(records, mine.id) if r["event"] == "done"]) == 1
    # Another replica's task is not this process's to touch.
    other = await client.get_task(GetTaskRequest(id=theirs.id))
    assert other.status.state == TaskState.TASK_STATE_SUBMITTED
    assert read_records(records, theirs.id) == []
    await client.close()

