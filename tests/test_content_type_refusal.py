"""A body that is not JSON is refused as A2A's ContentTypeNotSupportedError, in the form
of the binding it was sent to (A2A 1.0 §5.4): a JSON-RPC error object with code -32005 on
the JSON-RPC endpoint, the AIP-193 body on HTTP+JSON, both 415 with the ErrorInfo reason
CONTENT_TYPE_NOT_SUPPORTED. The adapter never runs (the browser-safety property that
tests/test_browser_safety.py checks from every origin)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json

V1 = {"A2A-Version": "1.0"}
INFO = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "CONTENT_TYPE_NOT_SUPPORTED",
    "domain": "a2a-protocol.org",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("content-type")) as started:
        yield started


def task_count(server: ServerProcess) -> int:
    reply = httpx.get(server.url + "/rest/tasks?pageSize=100", headers=V1, timeout=10)
    return len(reply.json().get("tasks", []))


def send_request() -> dict:
    message = {"role": "ROLE_USER", "parts": [{"text": "x"}], "messageId": str(uuid.uuid4())}
    return {"jsonrpc": "2.0", "id": 7, "method": "SendMessage", "params": {"message": message}}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_jsonrpc_answers_a_jsonrpc_error(server: ServerProcess, content_type: str) -> None:
    before = task_count(server)
    reply = httpx.post(
        server.url + "/",
        content=json.dumps(send_request()),
        headers={**V1, "Content-Type": content_type},
        timeout=10,
    )
    assert reply.status_code == 415, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    # The id is unknown: the body of a refused request is never read.
    assert body == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": -32005,
            "message": "send the request body as JSON: Content-Type: application/json",
            "data": [INFO],
        },
    }
    assert task_count(server) == before


def test_rest_answers_aip193(server: ServerProcess) -> None:
    before = task_count(server)
    reply = httpx.post(
        server.url + "/rest/message:send",
        content=json.dumps({"message": message_json("x")}),
        headers={**V1, "Content-Type": "text/plain"},
        timeout=10,
    )
    assert reply.status_code == 415, reply.text
    error = reply.json()["error"]
    assert error["code"] == 415
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"] == [INFO]
    assert task_count(server) == before


def test_other_refusals_keep_their_shape(server: ServerProcess) -> None:
    # A foreign origin is not an A2A error: the runtime's own reason, on every path.
    reply = httpx.post(
        server.url + "/",
        json=send_request(),
        headers={**V1, "Origin": "http://evil.example"},
        timeout=10,
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["details"][0]["reason"] == "CROSS_SITE_REQUEST"
