"""Files and data in and out, named artifacts, Done, Reject and message replies:
through the a2a-sdk client over real HTTP, in direct and durable mode (real Temporal)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import (
    Artifact,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct, Value

from tests.fixtures.outputs_adapter import CSV, LOGO_URL
from tests.support.a2a import make_client, wait_terminal
from tests.support.durable import own_temporal
from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess
from tests.support.temporal import TemporalDevServer

ADAPTER = Path(__file__).resolve().parent / "fixtures" / "outputs_adapter.py"
# Every binding the server serves (the servers below turn gRPC on).
TRANSPORTS = ["JSONRPC", "HTTP+JSON", "GRPC"]
MODES = ["direct", "durable"]
MAX_FILE_BYTES = "1000"


def _env(temporal: TemporalDevServer | None, **options: Any) -> dict[str, str]:
    env = {
        "ADAPTER_MODULE": str(ADAPTER),
        "ADAPTER_OPTIONS": json.dumps(options),
        "MOLECULE_MAX_FILE_BYTES": MAX_FILE_BYTES,
        "STREAM_BATCH_WINDOW": "0",
        **grpc_env(),
    }
    if temporal is not None:
        env.update(
            {
                **own_temporal(temporal.address),
                "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
                "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.1",
            }
        )
    return env


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, temporal_server: TemporalDevServer
) -> Iterator[dict[str, ServerProcess]]:
    """One server per mode, and one per mode whose adapter replies with messages;
    started together (each takes a second or two to come up)."""
    root = tmp_path_factory.mktemp("outputs")
    envs = {
        "direct": _env(None),
        "durable": _env(temporal_server),
        "direct-msg": _env(None, message_reply=True),
        "durable-msg": _env(temporal_server, message_reply=True),
    }
    started: dict[str, ServerProcess] = {}
    try:
        for name, env in envs.items():
            (root / name).mkdir()
            started[name] = ServerProcess(root / name, env).start(wait=False)
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


def message(
    *parts: Part, do: str = "seen", task_id: str = "", context_id: str = "", **extra: Any
) -> Message:
    meta = Struct()
    meta.update({"do": do, **extra})
    return Message(
        role=Role.ROLE_USER,
        message_id=str(uuid.uuid4()),
        parts=list(parts),
        metadata=meta,
        task_id=task_id,
        context_id=context_id,
    )


def data(value: Any) -> Part:
    part = Part()
    part.data.CopyFrom(json_format.ParseDict(value, Value()))
    return part


async def send(url: str, msg: Message, binding: str) -> StreamResponse:
    """SendMessage (not streamed): the one response."""
    client = await make_client(url, streaming=False, binding=binding)
    try:
        responses = [r async for r in client.send_message(SendMessageRequest(message=msg))]
    finally:
        await client.close()
    assert len(responses) == 1
    return responses[0]


async def stream(url: str, msg: Message, binding: str) -> list[StreamResponse]:
    client = await make_client(url, streaming=True, binding=binding)
    try:
        return [r async for r in client.send_message(SendMessageRequest(message=msg))]
    finally:
        await client.close()


async def get_task(url: str, task_id: str, binding: str) -> Task:
    client = await make_client(url, binding=binding)
    try:
        return await client.get_task(GetTaskRequest(id=task_id))
    finally:
        await client.close()


def artifacts_by_name(task: Task) -> dict[str, Artifact]:
    return {a.name: a for a in task.artifacts}


def replay(events: list[StreamResponse]) -> dict[str, Artifact]:
    """The artifacts as a streaming client rebuilds them from artifact updates."""
    built: dict[str, Artifact] = {}
    for event in events:
        if not event.HasField("artifact_update"):
            continue
        update = event.artifact_update
        aid = update.artifact.artifact_id
        if update.append and aid in built:
            built[aid].parts.extend(update.artifact.parts)
        else:
            built[aid] = Artifact()
            built[aid].CopyFrom(update.artifact)
    return {a.name: a for a in built.values()}


def final_state(events: list[StreamResponse]) -> TaskState:
    last = events[-1]
    return last.status_update.status.state if last.HasField("status_update") else last.task.status.state


def seen_of(task: Task) -> dict[str, Any]:
    seen = artifacts_by_name(task)["seen"]
    return json_format.MessageToDict(seen.parts[0].data)


def check_outputs(arts: dict[str, Artifact]) -> None:
    """The artifacts of `do=outputs`: text answer, CSV bytes + text, a URL file, data."""
    assert "".join(p.text for p in arts["answer"].parts) == "Your report is ready."
    report = arts["report"]
    assert report.description == "A CSV"
    file = report.parts[0]
    assert (file.raw, file.filename, file.media_type) == (CSV, "report.csv", "text/csv")
    assert "".join(p.text for p in report.parts[1:]) == "Generated from 2 rows."
    link = arts["links"].parts[0]
    assert (link.url, link.filename, link.media_type) == (LOGO_URL, "logo.png", "image/png")
    assert json_format.MessageToDict(arts["summary"].parts[0].data) == {"rows": 2, "total": 8}
    ids = {a.artifact_id for a in arts.values()}
    assert len(ids) == 4


@pytest.mark.parametrize("binding", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_file_and_data_parts_reach_the_adapter(servers, mode: str, binding: str) -> None:
    url = servers[mode].url
    msg = message(
        Part(text="look at these"),
        Part(raw=b"\x00\x01binary", filename="blob.bin", media_type="application/octet-stream"),
        Part(url="https://example.com/a.pdf", filename="a.pdf", media_type="application/pdf"),
        data({"city": "Oslo", "days": [1, 2]}),
    )
    response = await send(url, msg, binding)
    assert response.task.status.state == TaskState.TASK_STATE_COMPLETED, response.task.status
    seen = seen_of(response.task)
    assert seen["message_id"] == msg.message_id
    assert seen["text"] == "look at these"
    assert seen["parts"] == [
        {"kind": "text", "text": "look at these"},
        {
            "kind": "file",
            "name": "blob.bin",
            "media_type": "application/octet-stream",
            "url": "",
            "bytes": "\x00\x01binary",
            "size": 8,
        },
        {
            "kind": "file",
            "name": "a.pdf",
            "media_type": "application/pdf",
            "url": "https://example.com/a.pdf",
            "bytes": None,
            "size": None,
        },
        {"kind": "data", "data": {"city": "Oslo", "days": [1, 2]}},
    ]


@pytest.mark.parametrize("binding", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_a_message_with_only_a_file_or_data_is_taken(servers, mode: str, binding: str) -> None:
    url = servers[mode].url
    only_file = await send(url, message(Part(raw=b"abc", filename="x.txt", media_type="text/plain")), binding)
    assert only_file.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert seen_of(only_file.task)["text"] == ""
    only_data = await send(url, message(data([1, 2, 3])), binding)
    assert seen_of(only_data.task)["parts"] == [{"kind": "data", "data": [1, 2, 3]}]
    nothing = await send(url, message(Part(text="  ")), binding)
    assert nothing.task.status.state == TaskState.TASK_STATE_REJECTED
    assert "no file and no data" in nothing.task.status.message.parts[0].text


@pytest.mark.parametrize("binding", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_file_and_data_artifacts_out(servers, mode: str, binding: str) -> None:
    url = servers[mode].url
    response = await send(url, message(Part(text="report"), do="outputs"), binding)
    assert response.task.status.state == TaskState.TASK_STATE_COMPLETED
    check_outputs(artifacts_by_name(response.task))

    events = await stream(url, message(Part(text="report"), do="outputs"), binding)
    assert final_state(events) == TaskState.TASK_STATE_COMPLETED
    check_outputs(replay(events))
    task_id = events[0].task.id
    stored = await get_task(url, task_id, binding)
    check_outputs(artifacts_by_name(stored))
    # Ids are stable and distinct per artifact, so a retry or a later turn names them again.
    assert {a.artifact_id for a in stored.artifacts} == set(
        a.artifact_id for a in replay(events).values()
    )


@pytest.mark.parametrize("binding", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_done_and_reject(servers, mode: str, binding: str) -> None:
    url = servers[mode].url
    done = await stream(url, message(Part(text="go"), do="done"), binding)
    assert final_state(done) == TaskState.TASK_STATE_COMPLETED
    assert done[-1].status_update.status.message.parts[0].text == "All done."
    stored = await get_task(url, done[0].task.id, binding)
    assert stored.status.state == TaskState.TASK_STATE_COMPLETED
    assert stored.status.message.parts[0].text == "All done."
    assert "".join(p.text for p in stored.artifacts[0].parts) == "work"

    rejected = await send(url, message(Part(text="go"), do="reject"), binding)
    assert rejected.task.status.state == TaskState.TASK_STATE_REJECTED
    assert rejected.task.status.message.parts[0].text == "not for me"
    stored = await get_task(url, rejected.task.id, binding)
    assert stored.status.state == TaskState.TASK_STATE_REJECTED


@pytest.mark.parametrize("binding", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
async def test_message_reply(servers, mode: str, binding: str) -> None:
    url = servers[f"{mode}-msg"].url
    response = await send(url, message(Part(text="hi"), data({"q": 1}), do="outputs"), binding)
    assert response.HasField("message"), response
    reply = response.message
    assert reply.role == Role.ROLE_AGENT
    texts = [p.text for p in reply.parts if p.WhichOneof("content") == "text"]
    assert texts[0] == "Your report is ready."
    files = [p for p in reply.parts if p.WhichOneof("content") in ("raw", "url")]
    assert [(f.filename, f.media_type) for f in files] == [
        ("report.csv", "text/csv"),
        ("logo.png", "image/png"),
    ]
    assert files[0].raw == CSV

    events = await stream(url, message(Part(text="hi"), do="seen"), binding)
    assert len(events) == 1 and events[0].HasField("message")
    seen = json_format.MessageToDict(events[0].message.parts[0].data)
    assert seen["text"] == "hi"

    # A reject still gets a task, in its final state.
    rejected = await send(url, message(Part(text="hi"), do="reject"), binding)
    assert rejected.task.status.state == TaskState.TASK_STATE_REJECTED


@pytest.mark.parametrize("mode", MODES)
async def test_a_file_over_the_limit_fails_the_task(servers, mode: str) -> None:
    response = await send(servers[mode].url, message(Part(text="x"), do="big"), "JSONRPC")
    assert response.task.status.state == TaskState.TASK_STATE_FAILED
    text = response.task.status.message.parts[0].text
    assert "MOLECULE_MAX_FILE_BYTES" in text and "2000 bytes" in text


@pytest.mark.parametrize("mode", MODES)
async def test_a_file_answers_a_question(servers, mode: str) -> None:
    url = servers[mode].url
    first = await send(url, message(Part(text="start"), do="ask"), "JSONRPC")
    assert first.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    answer = message(
        Part(raw=b"%PDF", filename="q.pdf", media_type="application/pdf"),
        do="ask",
        task_id=first.task.id,
        context_id=first.task.context_id,
    )
    events = await stream(url, answer, "JSONRPC")
    assert final_state(events) == TaskState.TASK_STATE_COMPLETED
    stored = await get_task(url, first.task.id, "JSONRPC")
    assert seen_of(stored)["parts"][0]["name"] == "q.pdf"
    assert seen_of(stored)["parts"][0]["bytes"] == "%PDF"


@pytest.mark.parametrize("binding", TRANSPORTS)
async def test_a_retry_replaces_every_artifact_of_the_failed_attempt(servers, binding: str) -> None:
    url = servers["durable"].url
    events = await stream(url, message(Part(text="x"), do="retry_file"), binding)
    assert final_state(events) == TaskState.TASK_STATE_COMPLETED
    # The stream showed the partial file, then its replacement.
    streamed = [
        p.filename
        for e in events
        if e.HasField("artifact_update")
        for p in e.artifact_update.artifact.parts
        if p.filename
    ]
    assert streamed == ["partial.bin", "full.bin"]
    for arts in (replay(events), artifacts_by_name(await get_task(url, events[0].task.id, binding))):
        out = arts["out"]
        assert [(p.filename, p.raw) for p in out.parts] == [("full.bin", b"whole file")]
        # What only the failed attempt wrote is emptied.
        assert all(p.WhichOneof("content") == "text" and not p.text for p in arts["stale"].parts)


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_after_file_and_data_outputs(servers, mode: str, tmp_path: Path) -> None:
    url = servers[mode].url
    mark = tmp_path / "mark"
    client = await make_client(url, streaming=True)
    try:
        events = client.send_message(
            SendMessageRequest(message=message(Part(text="x"), do="slow", mark=str(mark)))
        )
        task_id, names = "", set()
        async for event in events:
            task_id = task_id or event.task.id
            if event.HasField("artifact_update"):
                names.add(event.artifact_update.artifact.name)
                if names == {"out", "progress"}:
                    break
        canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
        await events.aclose()  # type: ignore[attr-defined]
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        stored = await wait_terminal(client, task_id)
    finally:
        await client.close()
    assert stored.status.state == TaskState.TASK_STATE_CANCELED
    assert {a.name for a in stored.artifacts} == {"out", "progress"}
    for _ in range(200):  # the mark is written as the cancellation reaches the adapter
        if mark.exists():
            break
        await asyncio.sleep(0.05)
    assert mark.read_text() == "cancelled"  # the adapter saw CancelledError at its await


def test_file_part_bytes_are_base64_in_the_input() -> None:
    """The input stays JSON (Temporal's converter): bytes travel as base64."""
    from molecule_runtime.execution.parts import input_part

    part = input_part(Part(raw=b"\xff\x00", filename="b"))
    assert part is not None and part.kind == "file"
    assert part.data_base64 == base64.b64encode(b"\xff\x00").decode()  # type: ignore[union-attr]
