"""Durable payloads by reference: workflows and activities carry ids, the stages read
the message, history and metadata from the task store (real Temporal, real HTTP)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from a2a.client.client import Client as A2AClient
from a2a.server.cluster import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
)
from google.protobuf.struct_pb2 import Struct
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from molecule_runtime.durable.workflow import AgentTaskWorkflow
from molecule_runtime.store import open_stores
from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import event_task_id, make_client, task_text, wait_terminal
from tests.support.durable import durable_env, scripted_env, scripted_message
from tests.test_input_required import ask_then_answer, durable_extra, env_for

pytestmark = pytest.mark.temporal

HISTORY_FIXTURES = Path(__file__).parent / "fixtures" / "histories"
BIG = 3 * 1024 * 1024


async def send(
    client: A2AClient, message: Message, request_metadata: dict[str, Any] | None = None
) -> Task:
    request = SendMessageRequest(message=message)
    if request_metadata:
        request.metadata.update(request_metadata)
    events = [e async for e in client.send_message(request)]
    return await wait_terminal(client, event_task_id(events[0]))


def starts(records: Path, task_id: str) -> list[dict]:
    return [r for r in read_records(records, task_id) if r["event"] == "start"]


async def workflow_history(address: str, env: dict[str, str], task_id: str) -> WorkflowHistory:
    client = await Client.connect(address)
    handle = client.get_workflow_handle(f"molecule:{env['WORKSPACE_ID']}:{task_id}")
    history = await handle.fetch_history()
    # Whatever the stages were given, the recorded history replays.
    await Replayer(workflows=[AgentTaskWorkflow]).replay_workflow(history)
    return history


def payload_texts(history: WorkflowHistory) -> str:
    """Every payload of the history, decoded (what Temporal stores of the task)."""
    raw = json.loads(history.to_json())
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "data" in node and "metadata" in node and isinstance(node["data"], str):
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(raw)
    return "\n".join(found)


async def test_a_3mb_message_runs_durably_and_its_conversation_goes_on(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = durable_env(temporal_server.address, records)
    server = server_factory(env)
    client = await make_client(server.url)
    try:
        first = await send(client, scripted_message("x" * BIG, chunks=2))
        assert first.status.state == TaskState.TASK_STATE_COMPLETED, first.status
        assert task_text(first) == "c0 c1 "
        assert starts(records, first.id)[0]["text_len"] == BIG

        history = await workflow_history(temporal_server.address, env, first.id)
        size = len(history.to_json())
        print(f"workflow history of a 3 MiB message: {size} bytes (JSON), {len(history.events)} events")
        assert size < 64 * 1024
        assert "x" * 100 not in payload_texts(history)

        follow = scripted_message("and then?", chunks=1)
        follow.context_id = first.context_id
        second = await send(client, follow)
        assert second.status.state == TaskState.TASK_STATE_COMPLETED, second.status
        assert task_text(second) == "c0 "
        seen = starts(records, second.id)[0]
        assert seen["text_len"] == len("and then?")
        # The 3 MiB message is beyond the history budget; the answer after it is not.
        assert seen["history"] == [["assistant", "c0 c1 "]]
    finally:
        await client.close()


async def _conversation(url: str) -> tuple[Task, Task]:
    client = await make_client(url)
    try:
        context_id = str(uuid.uuid4())
        one = scripted_message("first words", chunks=2)
        one.context_id = context_id
        first = await send(client, one, {"label": "r", "nested": {"k": [1, "two"]}})
        two = scripted_message("second words\nin two lines", chunks=1)
        two.context_id = context_id
        second = await send(client, two)
        return first, second
    finally:
        await client.close()


async def test_direct_and_durable_hand_the_adapter_the_same_input(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    direct_records, durable_records = tmp_path / "direct", tmp_path / "durable"
    direct = server_factory(scripted_env(direct_records))
    durable = server_factory(durable_env(temporal_server.address, durable_records))
    seen: dict[str, list[dict]] = {}
    for name, server, records in (
        ("direct", direct, direct_records),
        ("durable", durable, durable_records),
    ):
        first, second = await _conversation(server.url)
        # The request's metadata reached the adapter (durable: read back from the store).
        assert task_text(first) == "r0 r1 "
        assert task_text(second) == "c0 "
        seen[name] = [
            {k: r[k] for k in ("history", "metadata", "text_len")}
            for task in (first, second)
            for r in starts(records, task.id)
        ]
    assert seen["durable"] == seen["direct"]
    assert seen["durable"][1]["history"] == [["user", "first words"], ["assistant", "r0 r1 "]]
    assert seen["durable"][0]["metadata"]["nested"] == {"k": [1, "two"]}


async def test_an_answer_to_a_question_resumes_with_its_own_input(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    env = env_for(tmp_path, **durable_extra(temporal_server.address))
    server = server_factory(env)
    # Checks the second turn's text ("Ada") and its history (the first turn).
    task_id, _ = await ask_then_answer(server.url, tmp_path)
    history = await workflow_history(temporal_server.address, env, task_id)
    payloads = payload_texts(history)
    assert "Ada" not in payloads and "hello there" not in payloads
    assert '"ref"' in payloads
    if os.environ.get("MOLECULE_RECORD_HISTORIES") == "1":
        (HISTORY_FIXTURES / "input_required.json").write_text(history.to_json())


def _stored(task_id: str, context_id: str, text: str, state: TaskState, **meta: Any) -> Task:
    metadata = Struct()
    metadata.update(meta)
    message = Message(
        role=Role.ROLE_USER, message_id=str(uuid.uuid4()), task_id=task_id, parts=[Part(text=text)]
    )
    message.metadata.update({"chunks": 2})
    task = Task(id=task_id, context_id=context_id, status=TaskStatus(state=state), history=[message])
    task.status.timestamp.GetCurrentTime()
    task.metadata.CopyFrom(metadata)
    return task


async def test_swept_task_gets_its_history_and_request_metadata(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = durable_env(temporal_server.address, records, MOLECULE_INSTANCE_ID="replica-a")
    workdir = tmp_path / "srv"
    stores = await open_stores(f"sqlite+aiosqlite:///{workdir / 'data' / 'tasks.db'}")
    context_id = str(uuid.uuid4())
    earlier = _stored(str(uuid.uuid4()), context_id, "earlier question", TaskState.TASK_STATE_COMPLETED)
    earlier.artifacts.append(Artifact(artifact_id="a", parts=[Part(text="earlier answer")]))
    # As if the process died right after storing the task, before start_workflow.
    swept_id = str(uuid.uuid4())
    swept = _stored(swept_id, context_id, "go on", TaskState.TASK_STATE_SUBMITTED)
    swept.metadata.update(
        {
            "molecule.instance": "replica-a",
            "molecule.request": {
                "message_id": swept.history[0].message_id,
                "metadata": {"label": "s"},
            },
        }
    )
    for task in (earlier, swept):
        await stores.tasks.save(task, prev_version=TaskVersion.MISSING, context=ServerCallContext())
    await stores.aclose()

    server = server_factory(env, workdir=workdir)
    client = await make_client(server.url)
    try:
        task = await wait_terminal(client, swept_id, timeout=30)
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status
        assert task_text(task) == "s0 s1 "
        seen = starts(records, swept_id)[0]
        assert seen["history"] == [["user", "earlier question"], ["assistant", "earlier answer"]]
        assert seen["metadata"] == {"chunks": 2, "label": "s"}
    finally:
        await client.close()
