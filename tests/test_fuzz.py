"""Hostile input, property-based: whatever arrives at the JSON-RPC (`POST /`) or REST
(`/rest/...`) endpoints, the answer is a proper JSON-RPC or HTTP error (never a 500),
and the server keeps serving.

One real server process (echo adapter, direct mode) takes every example over HTTP;
its log must not show an unhandled exception from our code or the ASGI server.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.procs import ServerProcess, running_server

A2A = {"A2A-Version": "1.0", "Content-Type": "application/json"}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
METHODS = [
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "GetExtendedAgentCard",
    "CreateTaskPushNotificationConfig",
    "message/send",
    "tasks/get",
    "tasks/cancel",
]
REST = [
    ("POST", "/rest/message:send"),
    ("POST", "/rest/message:stream"),
    ("GET", "/rest/tasks"),
    ("GET", "/rest/tasks/{id}"),
    ("POST", "/rest/tasks/{id}:cancel"),
    ("GET", "/rest/tasks/{id}:subscribe"),
    ("POST", "/rest/tasks/{id}/pushNotificationConfigs"),
    ("GET", "/rest/extendedAgentCard"),
]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A small size limit keeps the huge-input examples cheap; the limit itself is tested
    # in test_reliability_limits.py.
    env = {"MOLECULE_MAX_REQUEST_BYTES": str(256 * 1024)}
    with running_server(tmp_path_factory.mktemp("fuzz"), env) as server:
        yield server
    log = server.log_path.read_text(errors="replace")
    assert "Exception in ASGI application" not in log, log[-4000:]


@pytest.fixture(scope="module")
def http(target: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.url, timeout=30) as client:
        yield client


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
junk_strings = st.sampled_from(["", " ", "\x00", "\u202e", "🦀" * 50, "a" * 5000, "../../etc/passwd"])

part = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=200) | junk_strings | json_values}),
    st.fixed_dictionaries({"file": st.fixed_dictionaries({"uri": st.text(max_size=30)})}),
    st.fixed_dictionaries({"raw": st.text(alphabet=string.ascii_letters + "=+/", max_size=40)}),
    st.fixed_dictionaries({"url": st.text(max_size=30), "mediaType": st.text(max_size=10)}),
    st.fixed_dictionaries({"data": json_values}),
    st.dictionaries(st.sampled_from(["kind", "type", "unknownKind", "text", "metadata"]), json_values, max_size=3),
    json_values,
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["ROLE_USER", "ROLE_AGENT", "user", "ROLE_UNSPECIFIED", "x"]) | json_values,
        "messageId": st.text(max_size=40) | json_values,
        "taskId": st.text(max_size=40) | json_values,
        "contextId": st.text(max_size=40) | json_values,
        "parts": st.lists(part, max_size=4) | json_values,
        "metadata": json_values,
        "extensions": json_values,
    },
)
params = st.one_of(
    st.fixed_dictionaries(
        {"message": message},
        optional={"configuration": json_values, "metadata": json_values},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=60) | json_values,
            "historyLength": json_values,
            "pageSize": json_values,
            "pageToken": json_values,
            "status": json_values,
            "contextId": json_values,
        },
    ),
    json_values,
)
rpc_request = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", "", 2.0]) | json_values,
        "id": st.integers() | st.text(max_size=20) | st.none() | json_values,
        "method": st.sampled_from(METHODS) | st.text(max_size=20) | json_values,
        "params": params,
    },
)


def deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.builds(deep, st.integers(min_value=1, max_value=50_000), st.sampled_from(["list", "dict"])),
    st.sampled_from(
        [
            b"",
            b"null",
            b"{",
            b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": ',
            b"\xff\xfe\x00\x00",
            b"\xef\xbb\xbf{}",  # UTF-8 byte-order mark
            b'"\\ud800"',
            b"[]",
            b"[" + b"{}," * 1000 + b"{}]",  # a JSON-RPC batch of 1001 empty requests
            b"1e999999",
        ]
    ),
)


def assert_proper_jsonrpc(reply: httpx.Response) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:500])
    if reply.status_code != 200:
        assert reply.status_code in {400, 401, 404, 405, 413, 415, 422}, reply.status_code
        return
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        return  # a stream was started: the input was a valid request
    body = reply.json()
    items = body if isinstance(body, list) else [body]
    for item in items:
        assert item.get("jsonrpc") == "2.0", item
        assert ("result" in item) != ("error" in item), item
        if "error" in item:
            assert isinstance(item["error"]["code"], int), item
            assert isinstance(item["error"]["message"], str), item
            # An internal error is a bug in the server, not a property of the input.
            # The one exception is the SDK's own choice: a 0.3 method sent with
            # A2A-Version 1.0 gets -32603, as 0.3 clients know no -32009.
            assert item["error"]["code"] != -32603 or "is not supported by this handler" in item[
                "error"
            ]["message"], item


def assert_proper_http(reply: httpx.Response) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:500])
    if reply.status_code in {404, 405} and reply.text in {"Not Found", "Method Not Allowed"}:
        return  # the router's own answer for a path no route matches (e.g. an id "/")
    if reply.status_code >= 400:
        assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
        reply.json()


def post_rpc(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post("/", content=body, headers=A2A)


@FUZZ
@given(request=rpc_request)
def test_jsonrpc_structured(http: httpx.Client, request: dict[str, Any]) -> None:
    assert_proper_jsonrpc(post_rpc(http, json.dumps(request).encode()))


@FUZZ
@given(body=raw_bodies)
def test_jsonrpc_raw_bytes(http: httpx.Client, body: bytes) -> None:
    assert_proper_jsonrpc(post_rpc(http, body))


@FUZZ
@given(route=st.sampled_from(REST), task_id=st.text(max_size=30), body=raw_bodies | params.map(lambda p: json.dumps(p).encode()))
def test_rest(http: httpx.Client, route: tuple[str, str], task_id: str, body: bytes) -> None:
    method, path = route
    path = path.replace("{id}", quote(task_id, safe="") or "x")
    reply = http.request(
        method,
        path,
        content=body if method == "POST" else None,
        headers={**A2A, "Accept": "text/event-stream"} if path.endswith(":subscribe") else A2A,
    )
    assert_proper_http(reply)


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["pageSize", "pageToken", "historyLength", "contextId", "status", "x"]),
        st.text(max_size=20) | st.integers().map(str),
        max_size=4,
    )
)
def test_rest_list_query(http: httpx.Client, query: dict[str, str]) -> None:
    assert_proper_http(http.get("/rest/tasks", params=query, headers=A2A))


@pytest.mark.parametrize("path", ["/", "/rest/message:send", "/rest/message:stream"])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xfe" + b"garbage" * 10, id="non-utf8"),
        pytest.param(deep(100_000, "list"), id="deep-list"),
        pytest.param(deep(100_000, "dict"), id="deep-dict"),
        pytest.param(b'{"x": "' + b"a" * 200_000 + b'"}', id="huge-string"),
    ],
)
def test_known_nasty_bodies(http: httpx.Client, path: str, body: bytes) -> None:
    reply = http.post(path, content=body, headers=A2A)
    if path == "/":
        assert_proper_jsonrpc(reply)
    else:
        assert_proper_http(reply)
        assert reply.status_code in {400, 413}  # 413: the deep dict is 600 kB


def test_huge_text_part_is_answered(http: httpx.Client) -> None:
    text = "word " * 40_000  # 200 kB, under the 256 kB limit of this server
    message = {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": text}]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    reply = http.post("/", json=body, headers=A2A)
    assert reply.status_code == 200
    assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


def test_still_serving_after_the_fuzzing(http: httpx.Client) -> None:
    # Runs last in this module (file order): the server survived everything above.
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").json()["status"] == "ready"
    message = {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": [{"text": "alive"}]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    reply = http.post("/", json=body, headers=A2A).json()
    assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
