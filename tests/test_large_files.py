"""A ~3 MB file in and out of a durable task (real Temporal, real HTTP and gRPC): the
bytes arrive intact on both sides, and the workflow history stays small, so the file
never travels in Temporal's payloads."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import grpc.aio
import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    Artifact,
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

from tests.fixtures.conformance.adapter import pattern
from tests.support.a2a import make_client
from tests.support.procs import ServerProcess
from tests.support.temporal import TemporalDevServer
from tests.test_conformance import conformance_env
from tests.test_payloads_by_reference import workflow_history

pytestmark = pytest.mark.temporal

TRANSPORTS = ["JSONRPC", "HTTP+JSON", "GRPC"]
# Its base64 (4 MB) still fits MOLECULE_MAX_REQUEST_BYTES (4 MiB) in a JSON request.
SIZE = 3_000_000
HISTORY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def durable(
    tmp_path_factory: pytest.TempPathFactory, temporal_server: TemporalDevServer
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    env = conformance_env(temporal_server)
    server = ServerProcess(tmp_path_factory.mktemp("large"), env).start()
    try:
        yield server, env
    finally:
        server.stop()


async def client_for(url: str, binding: str, *, streaming: bool) -> Client:
    if binding != "GRPC":
        return await make_client(url, streaming=streaming, binding=binding)
    # gRPC clients refuse messages over 4 MB unless told otherwise (README, gRPC).
    unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    config = ClientConfig(
        streaming=streaming,
        httpx_client=httpx.AsyncClient(timeout=httpx.Timeout(60.0)),
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=lambda target: grpc.aio.insecure_channel(target, options=unlimited),
    )
    return await create_client(url, client_config=config)


def message(*parts: Part) -> Message:
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=list(parts))


async def exchange(url: str, binding: str, msg: Message) -> tuple[Task, list[StreamResponse], Task]:
    """The message sent twice (SendMessage, then streamed with a new id); the task of the
    first, the events of the second, and the second read back with GetTask."""
    client = await client_for(url, binding, streaming=False)
    try:
        sent = [r async for r in client.send_message(SendMessageRequest(message=msg))]
    finally:
        await client.close()
    assert len(sent) == 1 and sent[0].HasField("task"), sent
    again = Message()
    again.CopyFrom(msg)
    again.message_id = str(uuid.uuid4())
    client = await client_for(url, binding, streaming=True)
    try:
        events = [r async for r in client.send_message(SendMessageRequest(message=again))]
        stored = await client.get_task(GetTaskRequest(id=events[0].task.id))
    finally:
        await client.close()
    return sent[0].task, events, stored


def replay(events: list[StreamResponse]) -> dict[str, Artifact]:
    """The artifacts as a streaming client rebuilds them from artifact updates."""
    built: dict[str, Artifact] = {}
    for event in events:
        if event.HasField("artifact_update"):
            update = event.artifact_update
            aid = update.artifact.artifact_id
            if update.append and aid in built:
                built[aid].parts.extend(update.artifact.parts)
            else:
                built[aid] = Artifact()
                built[aid].CopyFrom(update.artifact)
    return {a.name: a for a in built.values()}


def by_name(task: Task) -> dict[str, Artifact]:
    return {a.name: a for a in task.artifacts}


async def assert_small_history(
    temporal: TemporalDevServer, env: dict[str, str], task_id: str
) -> int:
    history = await workflow_history(temporal.address, env, task_id)
    size = len(history.to_json())
    assert size < HISTORY_LIMIT, f"workflow history of a {SIZE}-byte file: {size} bytes"
    return size


@pytest.mark.parametrize("binding", TRANSPORTS)
async def test_a_3mb_file_in_reaches_the_adapter_intact(
    durable, temporal_server: TemporalDevServer, binding: str
) -> None:
    server, env = durable
    blob = pattern(SIZE)[::-1]  # not what the adapter makes: the bytes it saw are the sent ones
    msg = message(
        Part(text="hello"),
        Part(raw=blob, filename="big.bin", media_type="application/octet-stream"),
    )
    expected = {
        "name": "big.bin",
        "media_type": "application/octet-stream",
        "size": SIZE,
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    sent, events, stored = await exchange(server.url, binding, msg)
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    for arts in (by_name(sent), replay(events), by_name(stored)):
        received = json_format.MessageToDict(arts["received"].parts[0].data)
        assert received["files"] == [expected]
        assert "".join(p.text for p in arts["answer"].parts) == "echo: hello"
    for task_id in (sent.id, stored.id):
        size = await assert_small_history(temporal_server, env, task_id)
    print(f"{binding}: workflow history with a {SIZE}-byte file in: {size} bytes (JSON)")


@pytest.mark.parametrize("binding", TRANSPORTS)
async def test_a_3mb_file_artifact_out_is_delivered_intact(
    durable, temporal_server: TemporalDevServer, binding: str
) -> None:
    server, env = durable
    sent, events, stored = await exchange(server.url, binding, message(Part(text=f"big {SIZE}")))
    assert sent.status.state == TaskState.TASK_STATE_COMPLETED, sent.status
    assert stored.status.state == TaskState.TASK_STATE_COMPLETED, stored.status
    want = pattern(SIZE)
    for arts in (by_name(sent), replay(events), by_name(stored)):
        (file,) = arts["blob"].parts
        assert (file.filename, file.media_type) == ("blob.bin", "application/octet-stream")
        assert len(file.raw) == SIZE and file.raw == want
    for task_id in (sent.id, stored.id):
        size = await assert_small_history(temporal_server, env, task_id)
    print(f"{binding}: workflow history with a {SIZE}-byte file out: {size} bytes (JSON)")
