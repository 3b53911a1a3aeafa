"""Hostile input on every binding, property-based, beyond the bodies of test_fuzz.py:
headers (Last-Event-ID, Content-Type, Origin, Host, A2A-Version), ids, the 0.3
methods, and gRPC (structured requests, metadata, raw bytes). The verdict is "no
internal error, the server stays up": JSON-RPC never -32603, HTTP never 5xx,
gRPC never INTERNAL / UNKNOWN, and no ERROR line in the server's log.

Bounded for CI (MOLECULE_FUZZ_EXAMPLES examples per test, 150 by default: well
under a minute here); `MOLECULE_FUZZ_EXAMPLES=10000` is the long run
docs/security.md reports.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    SendMessageRequest,
    SubscribeToTaskRequest,
)
from google.protobuf.json_format import ParseDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json

EXAMPLES = int(os.environ.get("MOLECULE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
V1 = {"A2A-Version": "1.0", "Content-Type": "application/json"}
GRPC_METHODS = {
    "SendMessage": SendMessageRequest,
    "GetTask": GetTaskRequest,
    "ListTasks": ListTasksRequest,
    "CancelTask": CancelTaskRequest,
    "SubscribeToTask": SubscribeToTaskRequest,
    "SendStreamingMessage": SendMessageRequest,
}
STREAMING = {"SubscribeToTask", "SendStreamingMessage"}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"MOLECULE_MAX_REQUEST_BYTES": str(256 * 1024), **grpc_env()}
    with running_server(tmp_path_factory.mktemp("fuzz-bindings"), env) as server:
        yield server
    log = server.log_path.read_text(errors="replace")
    errors = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert not errors, "\n".join(errors[:10])


@pytest.fixture(scope="module")
def http(target: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def task_id(http: httpx.Client) -> str:
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message_json("hi")}}
    return http.post("/", json=body, headers=V1).json()["result"]["task"]["id"]


@pytest.fixture(scope="module")
def channel(target: ServerProcess) -> Iterator[grpc.Channel]:
    port = int(target.env["MOLECULE_GRPC_PORT"])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened


header_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.sampled_from(["", " ", "0", "-0", "1e3", "0x10", "9" * 30, "00000000000000000000001", "NaN"]),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Last-Event-ID": header_text,
        "A2A-Version": st.sampled_from(["1.0", "0.3", "", "2.0", "1", "x"]) | header_text,
        "Content-Type": st.sampled_from(
            ["application/json", "text/plain", "application/json; charset=latin-1", "", "application/a2a+json"]
        )
        | header_text,
        "Origin": st.sampled_from(["http://evil.example", "null", ""]) | header_text,
        "Accept": st.sampled_from(["text/event-stream", "*/*", ""]),
        "A2A-Extensions": header_text,
    },
)
ids = st.one_of(st.text(max_size=40), st.uuids().map(str), st.integers().map(str), st.just("../x"))
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
part_03 = st.one_of(
    st.fixed_dictionaries({"kind": st.just("text"), "text": st.text(max_size=50) | values}),
    st.fixed_dictionaries({"kind": st.just("data"), "data": values}),
    st.fixed_dictionaries({"kind": st.just("file"), "file": st.fixed_dictionaries({}, optional={"uri": st.text(max_size=20), "bytes": st.text(max_size=20), "mimeType": values})}),
    st.dictionaries(st.sampled_from(["kind", "text", "data", "file", "metadata"]), values, max_size=3),
)
message_03 = st.fixed_dictionaries(
    {"kind": st.just("message"), "messageId": ids},
    optional={
        "role": st.sampled_from(["user", "agent", "x"]) | values,
        "parts": st.lists(part_03, max_size=4) | values,
        "taskId": ids | values,
        "contextId": ids | values,
        "metadata": values,
    },
)
METHODS_03 = [
    "message/send",
    "message/stream",
    "tasks/get",
    "tasks/cancel",
    "tasks/resubscribe",
    "tasks/pushNotificationConfig/set",
    "tasks/pushNotificationConfig/get",
    "tasks/pushNotificationConfig/list",
    "tasks/pushNotificationConfig/delete",
    "agent/getAuthenticatedExtendedCard",
]


def no_internal_error(reply: httpx.Response) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    if reply.status_code != 200 or not reply.content:
        return
    text = reply.text
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        frames = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    else:
        frames = [text]
    for frame in frames:
        try:
            data = json.loads(frame)
        except ValueError:
            continue
        for item in data if isinstance(data, list) else [data]:
            error = item.get("error") if isinstance(item, dict) else None
            if isinstance(error, dict) and error.get("code") == -32603:
                # The SDK's choice for a 0.3 method sent with A2A-Version 1.0 (0.3 knows no -32009).
                assert "is not supported by this handler" in str(error.get("message")), item


@FUZZ
@given(request_headers=headers, kind=st.sampled_from(["rest-sub", "rest-get", "rpc-sub", "rpc-get", "v03-resub"]), known=st.booleans(), other=ids)
def test_http_headers_and_ids(
    http: httpx.Client, task_id: str, request_headers: dict[str, str], kind: str, known: bool, other: str
) -> None:
    target_id = task_id if known else other
    try:
        if kind.startswith("rest"):
            suffix = ":subscribe" if kind == "rest-sub" else ""
            from urllib.parse import quote

            reply = http.get(f"/rest/tasks/{quote(target_id, safe='') or 'x'}{suffix}", headers=request_headers)
        else:
            method = {"rpc-sub": "SubscribeToTask", "rpc-get": "GetTask", "v03-resub": "tasks/resubscribe"}[kind]
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"id": target_id}})
            reply = http.post("/", content=body, headers=request_headers)
    except httpx.LocalProtocolError:
        return  # a header httpx itself refuses to send
    no_internal_error(reply)


@FUZZ
@given(method=st.sampled_from(METHODS_03), message=message_03, extra=st.dictionaries(st.sampled_from(["id", "taskId", "historyLength", "pushNotificationConfigId", "pushNotificationConfig", "configuration", "metadata"]), values | ids, max_size=3))
def test_v03_methods(http: httpx.Client, method: str, message: dict[str, Any], extra: dict[str, Any]) -> None:
    params = {"message": message, **extra} if method.startswith("message/") else extra
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    no_internal_error(http.post("/", content=body, headers={"Content-Type": "application/json"}))


part_1 = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=50)}),
    st.fixed_dictionaries({"data": values}),
    st.fixed_dictionaries({"url": st.text(max_size=30)}, optional={"mediaType": st.text(max_size=10), "filename": st.text(max_size=10)}),
    st.fixed_dictionaries({"raw": st.binary(max_size=30).map(lambda b: __import__("base64").b64encode(b).decode())}),
)


@FUZZ
@given(
    method=st.sampled_from(sorted(GRPC_METHODS)),
    task=ids,
    parts=st.lists(part_1, max_size=5),
    metadata=st.dictionaries(st.text(max_size=8), values, max_size=3),
    history=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1),
    last_event_id=st.none() | header_text.filter(lambda s: s.isprintable()),
    version=st.sampled_from(["1.0", "0.3", "", "9"]),
)
def test_grpc_requests(
    channel: grpc.Channel,
    method: str,
    task: str,
    parts: list[dict[str, Any]],
    metadata: dict[str, Any],
    history: int | None,
    last_event_id: str | None,
    version: str,
) -> None:
    message = {"role": "ROLE_USER", "messageId": str(uuid.uuid4()), "parts": parts, "taskId": task, "metadata": metadata}
    kind = GRPC_METHODS[method]
    if kind is SendMessageRequest:
        fields: dict[str, Any] = {"message": message}
        if history is not None:
            fields["configuration"] = {"historyLength": history}
    elif kind is ListTasksRequest:
        fields = {} if history is None else {"historyLength": history}
    else:
        fields = {"id": task}
        if history is not None and kind is GetTaskRequest:
            fields["historyLength"] = history
    try:
        request = ParseDict(fields, kind())
    except Exception:
        return  # not a request a gRPC client could send
    call_metadata = [("a2a-version", version)] if version else []
    if last_event_id is not None and last_event_id.strip() == last_event_id and last_event_id:
        call_metadata.append(("last-event-id", last_event_id))
    path = f"/lf.a2a.v1.A2AService/{method}"
    call_grpc(channel, path, request.SerializeToString(), method in STREAMING, call_metadata)


def call_grpc(channel: grpc.Channel, path: str, payload: bytes, streaming: bool, metadata: list[tuple[str, str]]) -> None:
    try:
        if streaming:
            for _ in channel.unary_stream(path)(payload, metadata=metadata, timeout=20):
                pass
        else:
            channel.unary_unary(path)(payload, metadata=metadata, timeout=20)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (path, code, error.details())  # type: ignore[attr-defined]


@FUZZ
@given(method=st.sampled_from(sorted(GRPC_METHODS)), payload=st.binary(max_size=200))
def test_grpc_raw_bytes(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call_grpc(channel, f"/lf.a2a.v1.A2AService/{method}", payload, method in STREAMING, [("a2a-version", "1.0")])


def test_still_serving(http: httpx.Client, channel: grpc.Channel) -> None:
    assert http.get("/readyz").json()["status"] == "ready"
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message_json("alive")}}
    assert http.post("/", json=body, headers=V1).json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


def test_v03_parts_that_cannot_be_converted_are_client_errors(http: httpx.Client) -> None:
    """Found by the fuzzing: the SDK's 0.3 conversion of a file part whose bytes are
    not base64 was an internal error (molecule_runtime/server/compat03.py)."""
    for part in (
        {"kind": "file", "file": {"bytes": "0"}},
        {"kind": "file", "file": {"bytes": "not base64!"}},
    ):
        message = {"kind": "message", "role": "user", "messageId": str(uuid.uuid4()), "parts": [part]}
        body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
        error = http.post("/", json=body).json()["error"]
        assert error["code"] == -32602, error


def test_the_sdk_seam_of_the_03_part_converter() -> None:
    """Pins what compat03.install() relies on: the SDK converts each 0.3 part through
    the module-level `to_core_part`, looked up by name at each call."""
    import inspect

    import a2a.server.routes  # noqa: F401  (imports the 0.3 modules in their order)
    from a2a.compat.v0_3 import conversions

    from molecule_runtime.server.compat03 import install

    assert "core_msg.parts.append(to_core_part(p))" in inspect.getsource(conversions.to_core_message)
    install()
    assert getattr(conversions.to_core_part, "_molecule_client_errors", False)
