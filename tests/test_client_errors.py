"""Client mistakes are client errors on every binding: JSON-RPC -32700/-32600/-32602,
REST 4xx, gRPC INVALID_ARGUMENT; never -32603, a 500 or an ERROR traceback in the
server's log."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import SubscribeToTaskRequest

from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json

V1 = {"A2A-Version": "1.0", "Content-Type": "application/json"}
HUGE_ID = "99999999999999999999999999"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("client-errors"), grpc_env()) as started:
        yield started


def log_errors(server: ServerProcess) -> list[str]:
    time.sleep(0.3)  # let the lines land
    text = server.log_path.read_text(errors="replace")
    return [
        line
        for line in text.splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


def finished_task(server: ServerProcess) -> str:
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message_json("hi")}}
    reply = httpx.post(server.url + "/", json=body, headers=V1, timeout=10)
    return reply.json()["result"]["task"]["id"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000, id="open-brackets"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-lists"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="nested-objects"),
        pytest.param(
            b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":'
            + b"[" * 50_000
            + b"]" * 50_000
            + b"}}",
            id="nested-in-a-request",
        ),
    ],
)
def test_deep_nesting_is_a_client_error(server: ServerProcess, body: bytes) -> None:
    before = log_errors(server)
    reply = httpx.post(server.url + "/", content=body, headers=V1, timeout=30)
    assert reply.status_code == 200, reply.text[:300]
    error = reply.json()["error"]
    assert error["code"] in (-32700, -32600), error
    assert len(error["message"]) < 500
    rest = httpx.post(server.url + "/rest/message:send", content=body, headers=V1, timeout=30)
    assert rest.status_code == 400, rest.text[:300]
    assert log_errors(server) == before


def test_huge_last_event_id_is_a_client_error(server: ServerProcess) -> None:
    task_id = finished_task(server)
    before = log_errors(server)
    for value in (HUGE_ID, "9" * 5000, "-1", "1e3", str(2**63)):
        rest = httpx.get(
            f"{server.url}/rest/tasks/{task_id}:subscribe",
            headers={**V1, "Accept": "text/event-stream", "Last-Event-ID": value},
            timeout=10,
        )
        assert rest.status_code == 400, (value, rest.status_code, rest.text[:300])
        body = {"jsonrpc": "2.0", "id": 1, "method": "SubscribeToTask", "params": {"id": task_id}}
        rpc = httpx.post(
            server.url + "/",
            json=body,
            headers={**V1, "Accept": "text/event-stream", "Last-Event-ID": value},
            timeout=10,
        )
        assert rpc.status_code == 200
        assert '"code":-32602' in rpc.text.replace(" ", ""), (value, rpc.text[:300])
    assert log_errors(server) == before


async def test_huge_last_event_id_over_grpc_is_invalid_argument(server: ServerProcess) -> None:
    task_id = finished_task(server)
    port = int(server.env["MOLECULE_GRPC_PORT"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        call = stub.SubscribeToTask(
            SubscribeToTaskRequest(id=task_id),
            metadata=(("last-event-id", HUGE_ID), ("a2a-version", "1.0")),
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in call:
                pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value


def test_largest_event_id_is_still_an_event_id(server: ServerProcess) -> None:
    """The largest offset the store can hold is accepted (nothing after it)."""
    task_id = finished_task(server)
    reply = httpx.get(
        f"{server.url}/rest/tasks/{task_id}:subscribe",
        headers={**V1, "Accept": "text/event-stream", "Last-Event-ID": str(2**63 - 1)},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text[:300]


def test_still_serving(server: ServerProcess) -> None:
    assert finished_task(server)
    assert log_errors(server) == []


@pytest.mark.parametrize("value", ["2147483648", 2147483648, 1e10, 9 * 10**30])
def test_v03_history_length_beyond_32_bits_is_a_client_error(server: ServerProcess, value: object) -> None:
    """Found by the fuzzing: the 0.3 methods converted it to a 32-bit field and failed
    with an internal error ("Value out of range")."""
    task_id = finished_task(server)
    before = log_errors(server)
    message = {"kind": "message", "role": "user", "messageId": "m-" + task_id, "parts": [{"kind": "text", "text": "x"}]}
    for method, params in (
        ("tasks/get", {"id": task_id, "historyLength": value}),
        ("message/send", {"message": message, "configuration": {"historyLength": value}}),
    ):
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = httpx.post(server.url + "/", json=body, timeout=10)
        error = reply.json()["error"]
        assert error["code"] == -32602 and "MOLECULE_MAX_HISTORY_LENGTH" in error["message"], error
    assert log_errors(server) == before
