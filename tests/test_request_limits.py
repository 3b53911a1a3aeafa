"""Request complexity limits on every binding (JSON-RPC 1.0, the 0.3 methods, REST,
gRPC): parts per message, metadata size, history length asked for, JSON nesting and
values; refused as client errors naming the setting, before any task exists."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import GetTaskRequest, ListTasksRequest, SendMessageRequest
from google.protobuf.json_format import ParseDict

from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json

V1 = {"A2A-Version": "1.0", "Content-Type": "application/json"}
LIMITS = {
    "MOLECULE_MAX_MESSAGE_PARTS": "10",
    "MOLECULE_MAX_METADATA_BYTES": "1000",
    "MOLECULE_MAX_HISTORY_LENGTH": "5",
    "MOLECULE_MAX_JSON_VALUES": "2000",
    "MOLECULE_MAX_JSON_DEPTH": "16",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {**LIMITS, **grpc_env()}
    with running_server(tmp_path_factory.mktemp("request-limits"), env) as started:
        yield started


def message(parts: int = 1, metadata: Any = None, data: Any = None) -> dict[str, Any]:
    body = message_json("hi")
    body["parts"] = [{"text": f"p{i}"} for i in range(parts)]
    if data is not None:
        body["parts"].append({"data": data})
    if metadata is not None:
        body["metadata"] = metadata
    return body


def v03(msg: dict[str, Any]) -> dict[str, Any]:
    parts = []
    for part in msg["parts"]:
        if "text" in part:
            parts.append({"kind": "text", "text": part["text"]})
        else:
            parts.append({"kind": "data", "data": part["data"]})
    converted = {"kind": "message", "role": "user", "messageId": str(uuid.uuid4()), "parts": parts}
    if "metadata" in msg:
        converted["metadata"] = msg["metadata"]
    return converted


def task_count(url: str) -> int:
    reply = httpx.get(url + "/rest/tasks?pageSize=100", headers=V1, timeout=10)
    return len(reply.json().get("tasks", []))


def http_refusals(url: str, params: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    """(binding, code or status, message) of a SendMessage on every HTTP binding."""
    answers = []
    with httpx.Client(base_url=url, timeout=20) as http:
        for method in ("SendMessage", "SendStreamingMessage"):
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            reply = http.post("/", json=body, headers={**V1, "Accept": "text/event-stream"})
            text = reply.text
            if text.startswith("data:"):
                text = text.split("data:", 1)[1].strip().split("\n", 1)[0]
            error = json.loads(text).get("error", {})
            answers.append((method, error.get("code"), error.get("message", text)))
        v03_params = {**params, "message": v03(params["message"])}
        if "configuration" in params:
            v03_params["configuration"] = {"historyLength": params["configuration"]["historyLength"]}
        body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": v03_params}
        error = http.post("/", json=body).json().get("error", {})
        answers.append(("0.3", error.get("code"), error.get("message", "")))
        reply = http.post("/rest/message:send", json=params, headers=V1)
        answers.append(("rest", reply.status_code, reply.text))
    return answers


async def grpc_refusal(server: ServerProcess, request: Any, method: str = "SendMessage") -> grpc.aio.AioRpcError:
    port = int(server.env["MOLECULE_GRPC_PORT"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(stub, method)(request, metadata=(("a2a-version", "1.0"),))
    return refused.value


@pytest.mark.parametrize(
    ("params", "setting", "json_rpc_code"),
    [
        ({"message": message(parts=11)}, "MOLECULE_MAX_MESSAGE_PARTS", -32602),
        ({"message": message(metadata={"k": "v" * 1000})}, "MOLECULE_MAX_METADATA_BYTES", -32602),
        ({"message": message(), "metadata": {"k": "v" * 1000}}, "MOLECULE_MAX_METADATA_BYTES", -32602),
        ({"message": message(), "configuration": {"historyLength": 6}}, "MOLECULE_MAX_HISTORY_LENGTH", -32602),
        ({"message": message(data=[0] * 2500)}, "MOLECULE_MAX_JSON_VALUES", -32600),
        ({"message": message(data=json.loads("[" * 20 + "]" * 20))}, "MOLECULE_MAX_JSON_DEPTH", -32600),
    ],
    ids=["parts", "message-metadata", "request-metadata", "history-length", "values", "depth"],
)
async def test_limits_on_every_binding(
    server: ServerProcess, params: dict[str, Any], setting: str, json_rpc_code: int
) -> None:
    before = task_count(server.url)
    for binding, code, text in http_refusals(server.url, params):
        if binding == "rest":
            assert code == 400, (binding, code, text)
        else:
            assert code == json_rpc_code, (binding, code, text)
        assert setting in text, (binding, text)
    request = ParseDict(params, SendMessageRequest())
    refused = await grpc_refusal(server, request)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused
    assert setting in (refused.details() or ""), refused
    assert task_count(server.url) == before


async def test_history_length_asked_for_on_reads(server: ServerProcess) -> None:
    task_id = history_checks_over_http(server.url)
    for request, method in (
        (GetTaskRequest(id=task_id, history_length=6), "GetTask"),
        (ListTasksRequest(history_length=6), "ListTasks"),
    ):
        refused = await grpc_refusal(server, request, method)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "MOLECULE_MAX_HISTORY_LENGTH" in (refused.details() or "")


def history_checks_over_http(url: str) -> str:
    """GetTask and ListTasks asking for too much history, on JSON-RPC, 0.3 and REST."""
    reply = httpx.post(
        url + "/",
        json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message()}},
        headers=V1,
        timeout=10,
    )
    task_id = reply.json()["result"]["task"]["id"]
    with httpx.Client(base_url=url, timeout=10) as http:
        for method, params in (
            ("GetTask", {"id": task_id, "historyLength": 6}),
            ("ListTasks", {"historyLength": 6}),
        ):
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            error = http.post("/", json=body, headers=V1).json()["error"]
            assert error["code"] == -32602 and "MOLECULE_MAX_HISTORY_LENGTH" in error["message"]
        body = {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": task_id, "historyLength": 6}}
        error = http.post("/", json=body).json()["error"]
        assert error["code"] == -32602 and "MOLECULE_MAX_HISTORY_LENGTH" in error["message"]
        for path in (f"/rest/tasks/{task_id}?historyLength=6", "/rest/tasks?historyLength=6"):
            reply = http.get(path, headers=V1)
            assert reply.status_code == 400 and "MOLECULE_MAX_HISTORY_LENGTH" in reply.text
        # At the limit: served.
        assert http.get(f"/rest/tasks/{task_id}?historyLength=5", headers=V1).status_code == 200
    return task_id


def test_at_the_limits_a_message_is_served(server: ServerProcess) -> None:
    params = {
        "message": message(parts=9, metadata={"k": "v" * 500}, data=[0] * 1000),
        "configuration": {"historyLength": 5},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}
    reply = httpx.post(server.url + "/", json=body, headers=V1, timeout=10)
    assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED", reply.text


def test_the_reviews_quarter_million_parts_are_refused(tmp_path) -> None:
    """The review's message (250,000 one-letter parts, 3.75 MB) under default settings."""
    with running_server(tmp_path) as server:
        params = {"message": {**message_json("x"), "parts": [{"text": "a"}] * 250_000}}
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}
        reply = httpx.post(server.url + "/", json=body, headers=V1, timeout=30)
        error = reply.json()["error"]
        assert error["code"] in (-32600, -32602) and "MOLECULE_MAX" in error["message"], error
        assert task_count(server.url) == 0
