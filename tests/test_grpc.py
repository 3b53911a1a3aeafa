"""The gRPC binding through the a2a-sdk client (GRPC transport) against a real server
process: send, stream, get, cancel, subscribe (live and replayed from the event log),
auth (UNAUTHENTICATED), owner isolation (NOT_FOUND), per-principal limits and the
request size limit, the card and /readyz, SIGTERM, and durable mode on real Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.client import ClientCallContext
from a2a.client.errors import A2AClientError
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotFoundError
from google.rpc import error_details_pb2, status_pb2

from molecule_runtime.execution.admission import Admission, ServerBusyError
from molecule_runtime.server.grpc_refusals import refusal_status
from molecule_runtime.server.quotas import RateLimitedError
from molecule_runtime.vocabulary import Meta
from tests.support.a2a import event_task_id, make_client, user_message
from tests.support.durable import durable_env, scripted_env, scripted_message, streamed_text
from tests.support.grpc_client import grpc_env, make_grpc_client
from tests.support.otlp import OtlpReceiver
from tests.support.procs import ServerProcess, running_server

KEY_A = "alice-key-" + uuid.uuid4().hex
KEY_B = "bob-key-" + uuid.uuid4().hex
KEY_C = "carol-key-" + uuid.uuid4().hex
MAX_REQUEST = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("grpc")
    env = {
        **scripted_env(workdir / "records"),
        **grpc_env(),
        "MOLECULE_API_KEYS": f"alice:{KEY_A},bob:{KEY_B},carol:{KEY_C}",
        "MOLECULE_PRINCIPAL_MAX_TASKS": "1",
        "MOLECULE_MAX_REQUEST_BYTES": str(MAX_REQUEST),
        "STREAM_BATCH_WINDOW": "0",
    }
    with running_server(workdir, env) as started:
        yield started


def grpc_target(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.env['MOLECULE_GRPC_PORT']}"


def status_code(error: BaseException) -> grpc.StatusCode:
    """The gRPC status of a failed client call (the SDK client wraps it)."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, grpc.aio.AioRpcError):
        cause = cause.__cause__
    assert isinstance(cause, grpc.aio.AioRpcError), repr(error)
    return cause.code()


async def test_card_lists_grpc_and_readyz_reports_it(server: ServerProcess) -> None:
    async with httpx.AsyncClient() as http:
        card = (await http.get(server.url + "/.well-known/agent-card.json")).json()
        ready = (await http.get(server.url + "/readyz")).json()
    bindings = {i["protocolBinding"]: i for i in card["supportedInterfaces"]}
    assert set(bindings) == {"JSONRPC", "HTTP+JSON", "GRPC"}
    assert bindings["GRPC"]["url"] == grpc_target(server)
    assert bindings["GRPC"]["protocolVersion"] == "1.0"
    assert ready["grpc"].startswith("serving")
    assert ready["status"] == "ready"


async def test_send_stream_get(server: ServerProcess) -> None:
    client = await make_grpc_client(server.url, token=KEY_A)
    unary = await make_grpc_client(server.url, token=KEY_A, streaming=False)
    try:
        events = [e async for e in client.send_message(SendMessageRequest(message=scripted_message(chunks=3)))]
        assert events[0].HasField("task")
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert streamed_text(events) == "c0 c1 c2 "
        task_id = event_task_id(events[0])

        answers = [
            e
            async for e in unary.send_message(
                SendMessageRequest(message=scripted_message(chunks=2, label="u"))
            )
        ]
        assert len(answers) == 1
        assert answers[0].task.status.state == TaskState.TASK_STATE_COMPLETED
        assert "".join(p.text for a in answers[0].task.artifacts for p in a.parts) == "u0 u1 "

        stored = await unary.get_task(GetTaskRequest(id=task_id))
        assert stored.status.state == TaskState.TASK_STATE_COMPLETED
        assert "".join(p.text for a in stored.artifacts for p in a.parts) == "c0 c1 c2 "
    finally:
        await client.close()
        await unary.close()


async def _start_slow(client, *, chunks: int = 200) -> tuple[str, asyncio.Task[list[StreamResponse]], asyncio.Event]:
    """A streaming task that runs for a while: its id once its first chunk arrived."""
    first_chunk = asyncio.Event()
    ids: list[str] = []

    async def read() -> list[StreamResponse]:
        seen: list[StreamResponse] = []
        request = SendMessageRequest(message=scripted_message(chunks=chunks, delay=0.05))
        async for event in client.send_message(request):
            seen.append(event)
            ids.append(event_task_id(event))
            if event.HasField("artifact_update"):
                first_chunk.set()
        return seen

    reader = asyncio.create_task(read())
    await asyncio.wait_for(first_chunk.wait(), 20)
    return ids[0], reader, first_chunk


async def test_cancel_and_subscribe(server: ServerProcess) -> None:
    streaming = await make_grpc_client(server.url, token=KEY_A)
    follower = await make_grpc_client(server.url, token=KEY_A)
    unary = await make_grpc_client(server.url, token=KEY_A, streaming=False)
    try:
        task_id, reader, _ = await _start_slow(streaming)
        followed: list[StreamResponse] = []
        following = asyncio.Event()

        async def follow() -> None:
            async for event in follower.subscribe(SubscribeToTaskRequest(id=task_id)):
                followed.append(event)
                if event.HasField("artifact_update"):
                    following.set()

        subscription = asyncio.create_task(follow())
        await asyncio.wait_for(following.wait(), 20)
        canceled = await unary.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await asyncio.wait_for(subscription, 20)
        assert followed[0].task.id == task_id
        assert followed[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
        streamed = await asyncio.wait_for(reader, 20)
        assert streamed[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
        stored = await unary.get_task(GetTaskRequest(id=task_id))
        assert stored.status.state == TaskState.TASK_STATE_CANCELED

        # Replay from the event log: `last-event-id` metadata, as Last-Event-ID on HTTP.
        replay = [
            e
            async for e in follower.subscribe(
                SubscribeToTaskRequest(id=task_id),
                context=ClientCallContext(service_parameters={"last-event-id": "0"}),
            )
        ]
        assert replay[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
        assert streamed_text(replay) == streamed_text(streamed)
    finally:
        for client in (streaming, follower, unary):
            await client.close()


def event_id(event: StreamResponse) -> int | None:
    """The log offset a streamed event carries (`molecule.event_id` in its metadata)."""
    payload = getattr(event, event.WhichOneof("payload"))
    return int(payload.metadata[Meta.EVENT_ID]) if Meta.EVENT_ID in payload.metadata else None


async def test_streamed_events_carry_their_offset_to_resume_from(server: ServerProcess) -> None:
    """A client cut off mid-answer resumes with `last-event-id` set to the last
    event id it saw: nothing lost, nothing repeated, as over HTTP."""
    client = await make_grpc_client(server.url, token=KEY_A)
    chunks = 12
    try:
        before: list[StreamResponse] = []
        request = SendMessageRequest(message=scripted_message(chunks=chunks, delay=0.05))
        async with contextlib.aclosing(client.send_message(request)) as stream:
            async for event in stream:
                before.append(event)
                if sum(e.HasField("artifact_update") for e in before) == 3:
                    break
        task_id = event_task_id(before[0])
        ids = [event_id(e) for e in before]
        assert None not in ids and ids == sorted(set(ids)), ids

        after = [
            e
            async for e in client.subscribe(
                SubscribeToTaskRequest(id=task_id),
                context=ClientCallContext(service_parameters={"last-event-id": str(ids[-1])}),
            )
        ]
        after_ids = [event_id(e) for e in after]
        assert None not in after_ids and after_ids == sorted(set(after_ids))
        assert after_ids[0] > ids[-1]
        assert after[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert streamed_text(before + after) == "".join(f"c{i} " for i in range(chunks))

        replay = [
            e
            async for e in client.subscribe(
                SubscribeToTaskRequest(id=task_id),
                context=ClientCallContext(service_parameters={"last-event-id": "0"}),
            )
        ]
        assert [e for e in replay if (event_id(e) or 0) > ids[-1]] == after
        # At the end of a finished task's log: an empty stream.
        last = str(event_id(replay[-1]))
        assert [
            e
            async for e in client.subscribe(
                SubscribeToTaskRequest(id=task_id),
                context=ClientCallContext(service_parameters={"last-event-id": last}),
            )
        ] == []
    finally:
        await client.close()


REPEAT = 5 * 4096
FILE_BYTES = bytes(range(256)) * REPEAT  # 5 MiB
BIG_FILE_ADAPTER = """
from molecule_runtime.adapters import AdapterConfig, BaseAdapter, FileOutput


class Adapter(BaseAdapter):
    @staticmethod
    def name() -> str:
        return "big-file"

    async def setup(self, config: AdapterConfig) -> None:
        self.data = bytes(range(256)) * config.options["repeat"]

    async def stream(self, task):
        yield FileOutput("big.bin", "application/octet-stream", data=self.data)
"""


async def test_a_task_with_a_5_mib_file_needs_the_clients_receive_limit_raised(tmp_path: Path) -> None:
    """gRPC clients receive 4 MiB by default; with the README's channel option a
    task holding a file of 5 MiB (MOLECULE_MAX_FILE_BYTES is 10 MiB) comes whole."""
    adapter = tmp_path / "big_file_adapter.py"
    adapter.write_text(BIG_FILE_ADAPTER)
    env = {"ADAPTER_MODULE": str(adapter), "ADAPTER_OPTIONS": json.dumps({"repeat": REPEAT}), **grpc_env()}

    def client_config(options: list[tuple[str, int]]) -> ClientConfig:
        return ClientConfig(
            streaming=False,
            httpx_client=httpx.AsyncClient(timeout=60),
            supported_protocol_bindings=["GRPC"],
            grpc_channel_factory=lambda target: grpc.aio.insecure_channel(target, options=options),
        )

    with running_server(tmp_path, env) as big:
        raised = await create_client(
            big.url, client_config=client_config([("grpc.max_receive_message_length", -1)])
        )
        default = await create_client(big.url, client_config=client_config([]))
        try:
            sent = [e async for e in raised.send_message(SendMessageRequest(message=user_message("go")))]
            assert sent[0].task.status.state == TaskState.TASK_STATE_COMPLETED
            stored = await raised.get_task(GetTaskRequest(id=sent[0].task.id))
            files = [p for a in stored.artifacts for p in a.parts if p.WhichOneof("content") == "raw"]
            assert [(f.filename, f.raw == FILE_BYTES) for f in files] == [("big.bin", True)]

            with pytest.raises(A2AClientError) as refused:
                await default.get_task(GetTaskRequest(id=sent[0].task.id))
            assert status_code(refused.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await raised.close()
            await default.close()


async def test_unauthenticated(server: ServerProcess) -> None:
    for token in (None, "not-a-key-" + uuid.uuid4().hex):
        client = await make_grpc_client(server.url, token=token, streaming=False)
        try:
            with pytest.raises(A2AClientError) as refused:
                await client.get_task(GetTaskRequest(id=str(uuid.uuid4())))
            assert status_code(refused.value) == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(A2AClientError) as refused:
                async for _ in client.send_message(SendMessageRequest(message=user_message("hi"))):
                    pass
            assert status_code(refused.value) == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await client.close()
    # Streaming methods too.
    client = await make_grpc_client(server.url)
    try:
        with pytest.raises(A2AClientError) as refused:
            async for _ in client.send_message(SendMessageRequest(message=user_message("hi"))):
                pass
        assert status_code(refused.value) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await client.close()


async def test_another_principal_gets_not_found(server: ServerProcess) -> None:
    owner = await make_grpc_client(server.url, token=KEY_A)
    other = await make_grpc_client(server.url, token=KEY_B, streaming=False)
    other_streaming = await make_grpc_client(server.url, token=KEY_B)
    try:
        task_id, reader, _ = await _start_slow(owner)
        with pytest.raises(TaskNotFoundError):
            await other.get_task(GetTaskRequest(id=task_id))
        with pytest.raises(TaskNotFoundError):
            await other.cancel_task(CancelTaskRequest(id=task_id))
        for context in (None, ClientCallContext(service_parameters={"last-event-id": "0"})):
            with pytest.raises(TaskNotFoundError):
                async for _ in other_streaming.subscribe(
                    SubscribeToTaskRequest(id=task_id), context=context
                ):
                    pass
        with pytest.raises(TaskNotFoundError):
            async for _ in other.send_message(
                SendMessageRequest(message=user_message("mine now", task_id=task_id))
            ):
                pass
        # One owner scope on every binding: over JSON-RPC too, bob finds nothing, alice
        # finds her task.
        other_http = await make_client(server.url, token=KEY_B)
        owner_http = await make_client(server.url, token=KEY_A)
        try:
            with pytest.raises(TaskNotFoundError):
                await other_http.get_task(GetTaskRequest(id=task_id))
            assert (await owner_http.get_task(GetTaskRequest(id=task_id))).id == task_id
        finally:
            await other_http.close()
            await owner_http.close()
        # Untouched by all of it: still running for its owner.
        owner_unary = await make_grpc_client(server.url, token=KEY_A, streaming=False)
        try:
            stored = await owner_unary.get_task(GetTaskRequest(id=task_id))
            assert stored.status.state == TaskState.TASK_STATE_WORKING
            await owner_unary.cancel_task(CancelTaskRequest(id=task_id))
        finally:
            await owner_unary.close()
        await asyncio.wait_for(reader, 20)
    finally:
        for client in (owner, other, other_streaming):
            await client.close()


async def test_refusals_and_request_size(server: ServerProcess) -> None:
    """A principal past MOLECULE_PRINCIPAL_MAX_TASKS is refused with RESOURCE_EXHAUSTED,
    ErrorInfo and RetryInfo; a message over MOLECULE_MAX_REQUEST_BYTES too."""
    client = await make_grpc_client(server.url, token=KEY_C)
    channel = grpc.aio.insecure_channel(grpc_target(server))
    stub = a2a_pb2_grpc.A2AServiceStub(channel)
    metadata = (("authorization", f"Bearer {KEY_C}"), ("a2a-version", "1.0"))
    try:
        task_id, reader, _ = await _start_slow(client)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(
                SendMessageRequest(
                    message=user_message("one more"),
                    configuration=SendMessageConfiguration(return_immediately=True),
                ),
                metadata=metadata,
            )
        error = refused.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailing = dict(error.trailing_metadata() or ())
        assert trailing["retry-after"].isdigit()
        status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == "PRINCIPAL_TASK_LIMIT"
        assert status.details[1].Is(error_details_pb2.RetryInfo.DESCRIPTOR)
        await stub.CancelTask(CancelTaskRequest(id=task_id), metadata=metadata)
        await asyncio.wait_for(reader, 20)

        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.SendMessage(
                SendMessageRequest(message=user_message("x" * (MAX_REQUEST + 1))), metadata=metadata
            )
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await client.close()
        await channel.close()


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (ServerBusyError(Admission(1, 0)), grpc.StatusCode.UNAVAILABLE, "SERVER_BUSY"),
        (RateLimitedError(60, 3), grpc.StatusCode.RESOURCE_EXHAUSTED, "PRINCIPAL_RATE_LIMIT"),
    ],
    ids=["busy", "rate"],
)
def test_refusal_status(error, code: grpc.StatusCode, reason: str) -> None:
    """Server busy is UNAVAILABLE (retry elsewhere or later), a principal's limit is
    RESOURCE_EXHAUSTED; both say when to retry."""
    got, message, trailing = refusal_status(error)
    assert got == code
    assert message == error.message
    metadata = dict(trailing)
    assert metadata["retry-after"] == str(error.retry_after)
    status = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert status.code == code.value[0]
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(retry)
    assert info.reason == reason
    assert retry.retry_delay.seconds == error.retry_after


async def test_sigterm_lets_a_grpc_stream_finish(tmp_path: Path) -> None:
    """SIGTERM: the gRPC port takes no new calls, a stream in flight ends normally
    within the grace period, and the process exits 0."""
    env = {**scripted_env(tmp_path / "records"), **grpc_env(), "MOLECULE_SHUTDOWN_GRACE": "10"}
    with running_server(tmp_path, env) as server:
        client = await make_grpc_client(server.url)
        try:
            _, reader, _ = await _start_slow(client, chunks=20)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            events = await asyncio.wait_for(reader, 20)
            assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
            assert streamed_text(events) == "".join(f"c{i} " for i in range(20))
            assert await asyncio.to_thread(server.proc.wait, 20) == 0
        finally:
            await client.close()


def test_a_taken_grpc_port_stops_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ServerProcess(tmp_path, grpc_env(taken.getsockname()[1]))
        server.start(wait=False)
        assert server.proc is not None
        assert server.proc.wait(timeout=60) == 2
    assert "cannot start: the gRPC binding cannot listen on" in server.log()
    assert "MOLECULE_GRPC_PORT" in server.log()


async def test_a_grpc_call_joins_the_callers_trace(tmp_path: Path) -> None:
    """`traceparent` metadata: the task's stage spans are in the caller's trace."""
    stages = {"task_receive", "llm_call", "task_complete"}
    with OtlpReceiver() as receiver:
        env = {
            **grpc_env(),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with running_server(tmp_path, env) as server:
            trace_id = os.urandom(16).hex()
            traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
            client = await make_grpc_client(server.url)
            try:
                events = [
                    e
                    async for e in client.send_message(
                        SendMessageRequest(message=user_message("trace me")),
                        context=ClientCallContext(service_parameters={"traceparent": traceparent}),
                    )
                ]
            finally:
                await client.close()
            deadline = time.monotonic() + 20
            while not stages <= {s.name for s in receiver.in_trace(trace_id)}:
                assert time.monotonic() < deadline, receiver.in_trace(trace_id)
                await asyncio.sleep(0.1)
            for span in receiver.in_trace(trace_id):
                if span.name in stages:
                    assert span.attributes["a2a.task.id"] == event_task_id(events[0])


@pytest.mark.temporal
async def test_durable_send_and_stream(temporal_server, tmp_path: Path) -> None:
    env = {**durable_env(temporal_server.address, tmp_path / "records"), **grpc_env()}
    with running_server(tmp_path, env) as server:
        client = await make_grpc_client(server.url)
        unary = await make_grpc_client(server.url, streaming=False)
        try:
            events = [e async for e in client.send_message(SendMessageRequest(message=scripted_message(chunks=3)))]
            assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
            assert streamed_text(events) == "c0 c1 c2 "
            answers = [e async for e in unary.send_message(SendMessageRequest(message=scripted_message(chunks=2)))]
            task = answers[0].task
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            stored = await unary.get_task(GetTaskRequest(id=event_task_id(events[0])))
            for done in (task, stored):
                assert done.metadata["molecule.mode"] == "durable"
        finally:
            await client.close()
            await unary.close()


async def test_an_unsupported_a2a_version_is_unimplemented(server: ServerProcess) -> None:
    """`a2a-version` metadata the 1.0 service does not speak: VersionNotSupportedError, whose
    gRPC status A2A gives as UNIMPLEMENTED (with its ErrorInfo); 1.0, 1.0.x or none are served."""
    async with grpc.aio.insecure_channel(grpc_target(server)) as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        auth = ("authorization", f"Bearer {KEY_C}")
        for version in ("2.0", "0.3", "9"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetTask(
                    GetTaskRequest(id=str(uuid.uuid4())), metadata=(auth, ("a2a-version", version))
                )
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, version
            assert version in (refused.value.details() or "")
            status = status_pb2.Status.FromString(
                dict(refused.value.trailing_metadata() or ())["grpc-status-details-bin"]
            )
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info) and info.reason == "VERSION_NOT_SUPPORTED"
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in stub.SendStreamingMessage(
                    SendMessageRequest(message=user_message("hi")),
                    metadata=(auth, ("a2a-version", version)),
                ):
                    pass
            assert streamed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        for version in ("1.0", "1.0.3", None):
            metadata = (auth,) if version is None else (auth, ("a2a-version", version))
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetTask(GetTaskRequest(id=str(uuid.uuid4())), metadata=metadata)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND, version
