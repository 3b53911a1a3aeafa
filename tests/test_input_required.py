"""input-required: an adapter asks a question; the user's next message continues the task."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from a2a.helpers.proto_helpers import get_message_text
from a2a.types.a2a_pb2 import GetTaskRequest, TaskState
from temporalio.client import Client, WorkflowExecutionStatus

from tests.support.a2a import make_client, stream_events, user_message, wait_terminal

ASKING = Path(__file__).parent / "fixtures" / "asking_adapter.py"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ADAPTER_MODULE": str(ASKING),
        "ADAPTER_OPTIONS": json.dumps({"record": str(tmp_path / "record.jsonl")}),
        **extra,
    }


def durable_extra(address: str) -> dict[str, str]:
    queue = f"ir-{uuid.uuid4().hex[:8]}"
    return {
        "TEMPORAL_HOST": address,
        "TEMPORAL_TASK_QUEUE": queue,
        "WORKSPACE_ID": queue,
        "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
    }


async def ask_then_answer(url: str, tmp_path: Path, *, restart=None) -> tuple[str, object]:
    client = await make_client(url)
    first = [e async for e in stream_events(client, user_message("hello there"))]
    task_id, context_id = first[0].task.id, first[0].task.context_id
    last = first[-1].status_update.status
    assert last.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert get_message_text(last.message) == "What is your name?"
    waiting = await client.get_task(GetTaskRequest(id=task_id))
    assert waiting.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    await client.close()
    if restart is not None:
        url = restart()
    client = await make_client(url)
    second = [
        e
        async for e in stream_events(
            client, user_message("Ada", task_id=task_id, context_id=context_id)
        )
    ]
    assert second[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    task = await wait_terminal(client, task_id)
    await client.close()
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    answers = {a.artifact_id: "".join(p.text for p in a.parts) for a in task.artifacts}
    assert answers == {f"{task_id}-answer": "Hi! ", f"{task_id}-answer-2": "Nice to meet you, Ada."}
    records = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == ["hello there", "Ada"]
    # The second turn sees the conversation so far.
    assert records[1]["history"] == [["user", "hello there"], ["assistant", "Hi! What is your name?"]]
    return task_id, task


async def test_direct_mode_round_trip(server_factory, tmp_path: Path) -> None:
    server = server_factory(env_for(tmp_path))
    await ask_then_answer(server.url, tmp_path)


@pytest.mark.temporal
async def test_durable_mode_waits_in_the_workflow(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    env = env_for(tmp_path, **durable_extra(temporal_server.address))
    server = server_factory(env)
    task_id, task = await ask_then_answer(server.url, tmp_path)
    assert task.metadata["molecule.mode"] == "durable"
    tclient = await Client.connect(temporal_server.address)
    handle = tclient.get_workflow_handle(f"molecule:{env['WORKSPACE_ID']}:{task_id}")
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


@pytest.mark.temporal
async def test_durable_wait_survives_a_restart(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    env = env_for(tmp_path, **durable_extra(temporal_server.address))
    workdir = tmp_path / "srv"
    server = server_factory(env, workdir=workdir)

    def restart() -> str:
        server.kill()
        return server_factory(env, workdir=workdir, port=server.port).url

    await ask_then_answer(server.url, tmp_path, restart=restart)


@pytest.mark.temporal
async def test_unanswered_question_times_out(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    env = env_for(tmp_path, **durable_extra(temporal_server.address), MOLECULE_INPUT_TIMEOUT="1")
    server = server_factory(env)
    client = await make_client(server.url)
    first = [e async for e in stream_events(client, user_message("hello there"))]
    started = time.monotonic()
    task = await wait_terminal(client, first[0].task.id, timeout=20)
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "No answer" in get_message_text(task.status.message)
    assert time.monotonic() - started < 15  # a hang bound: MOLECULE_INPUT_TIMEOUT is 1 s
    await client.close()
