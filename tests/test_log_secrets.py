"""No webhook URL, token or credential reaches the log at any level, whatever shape
the client sends it in (strings, lists, objects, numbers' places), on every binding:
JSON-RPC 1.0, A2A 0.3 method names, REST and gRPC; and a malformed request is
logged without an ERROR traceback."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    AuthenticationInfo,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskPushNotificationConfig,
)
from google.protobuf.json_format import ParseDict

from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json

V1 = {"A2A-Version": "1.0", "Content-Type": "application/json"}
V03 = {"Content-Type": "application/json"}
MARK = "sekr1t" + uuid.uuid4().hex[:12]


def secret(kind: str) -> str:
    return f"{MARK}-{kind}"


def shapes(field: str) -> list[Any]:
    """The values a client might (wrongly) send for a secret field."""
    value = secret(field)
    url = f"https://hooks.example.com/{value}"
    plain = url if field == "url" else value
    return [
        plain,
        [plain],
        {"value": plain},
        {"nested": [{"deeper": plain}]},
        [[plain], {"x": plain}],
        {plain: 1},  # the secret as a key
    ]


def push_configs() -> Iterator[dict[str, Any]]:
    """Push configs (1.0 field names) with one secret field in each malformed shape."""
    good = {"url": "https://hooks.example.com/ok", "token": "t"}
    for field in ("url", "token", "credentials"):
        for shape in shapes(field):
            if field == "credentials":
                yield {**good, "authentication": {"scheme": "Bearer", "credentials": shape}}
                yield {**good, "authentication": shape}
            else:
                yield {**good, field: shape}


def v03_configs() -> Iterator[dict[str, Any]]:
    good = {"url": "https://hooks.example.com/ok", "token": "t"}
    for field in ("url", "token", "credentials"):
        for shape in shapes(field):
            if field == "credentials":
                yield {**good, "authentication": {"schemes": ["Bearer"], "credentials": shape}}
                yield {**good, "authentication": shape}
            else:
                yield {**good, field: shape}


@pytest.fixture(scope="module", params=["DEBUG", "INFO"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "LOG_LEVEL": request.param,
        "MOLECULE_PUSH_ALLOW_PRIVATE": "false",
        **grpc_env(),
    }
    with running_server(tmp_path_factory.mktemp(f"log-{request.param}"), env) as started:
        yield started


def rpc(http: httpx.Client, method: str, params: Any, headers: dict[str, str]) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return http.post("/", json=body, headers=headers)


def a_task(http: httpx.Client) -> str:
    reply = rpc(http, "SendMessage", {"message": message_json("hi")}, V1)
    return reply.json()["result"]["task"]["id"]


def log_size(server: ServerProcess) -> int:
    return len(server.log_path.read_text(errors="replace"))


def assert_clean(server: ServerProcess, since: int) -> None:
    time.sleep(0.5)  # let the lines land
    log = server.log_path.read_text(errors="replace")[since:]
    leaked = [line for line in log.splitlines() if MARK in line]
    assert not leaked, "\n".join(leaked[:5])
    assert "Traceback" not in log, log[log.index("Traceback") - 400 :][:2000]
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert not errors, "\n".join(errors[:5])


def test_jsonrpc_and_rest_and_v03(server: ServerProcess) -> None:
    since = log_size(server)
    with httpx.Client(base_url=server.url, timeout=20) as http:
        task_id = a_task(http)
        for config in push_configs():
            # JSON-RPC 1.0: a config of its own, and one inside SendMessage.
            rpc(http, "CreateTaskPushNotificationConfig", {"taskId": task_id, **config}, V1)
            rpc(
                http,
                "SendMessage",
                {
                    "message": message_json("hi"),
                    "configuration": {"taskPushNotificationConfig": config},
                },
                V1,
            )
            rpc(
                http,
                "SendStreamingMessage",
                {
                    "message": message_json("hi"),
                    "configuration": {"taskPushNotificationConfig": config},
                },
                {**V1, "Accept": "text/event-stream"},
            )
            # REST.
            http.post(f"/rest/tasks/{task_id}/pushNotificationConfigs", json=config, headers=V1)
            http.post(
                "/rest/message:send",
                json={
                    "message": message_json("hi"),
                    "configuration": {"taskPushNotificationConfig": config},
                },
                headers=V1,
            )
        for config in v03_configs():
            rpc(
                http,
                "tasks/pushNotificationConfig/set",
                {"taskId": task_id, "pushNotificationConfig": config},
                V03,
            )
            message = {
                "kind": "message",
                "role": "user",
                "messageId": str(uuid.uuid4()),
                "parts": [{"kind": "text", "text": "hi"}],
            }
            for method in ("message/send", "message/stream"):
                rpc(
                    http,
                    method,
                    {"message": message, "configuration": {"pushNotificationConfig": config}},
                    V03,
                )
        # Well-formed ones too: a refused (private) webhook, an accepted public one.
        for url in (f"http://127.0.0.1:9/{secret('private')}", f"https://example.com/{secret('ok')}"):
            good = {"url": url, "token": secret("tok"), "authentication": {"scheme": "Bearer", "credentials": secret("cred")}}
            rpc(http, "CreateTaskPushNotificationConfig", {"taskId": task_id, **good}, V1)
        # A whole config in a wrong shape: it has no field names to go by.
        for shape in ([secret("whole")], secret("whole"), [{"url": secret("whole")}]):
            configuration = {"taskPushNotificationConfig": shape, "pushNotificationConfig": shape}
            rpc(http, "SendMessage", {"message": message_json("hi"), "configuration": configuration}, V1)
            http.post("/rest/message:send", json={"message": message_json("hi"), "configuration": configuration}, headers=V1)
            rpc(http, "tasks/pushNotificationConfig/set", {"taskId": task_id, "pushNotificationConfig": shape}, V03)
    assert_clean(server, since)


async def test_grpc(server: ServerProcess) -> None:
    since = log_size(server)
    port = int(server.env["MOLECULE_GRPC_PORT"])
    with httpx.Client(base_url=server.url, timeout=20) as http:
        task_id = a_task(http)
    metadata = (("a2a-version", "1.0"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        for url in (f"http://127.0.0.1:9/{secret('g-private')}", f"https://example.com/{secret('g-ok')}", secret("g-not-a-url")):
            config = TaskPushNotificationConfig(
                task_id=task_id,
                url=url,
                token=secret("g-tok"),
                authentication=AuthenticationInfo(scheme="Bearer", credentials=secret("g-cred")),
            )
            try:
                await stub.CreateTaskPushNotificationConfig(config, metadata=metadata)
            except grpc.aio.AioRpcError as refused:
                assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused
            request = SendMessageRequest(
                message=ParseDict(message_json("hi"), SendMessageRequest().message),
                configuration=SendMessageConfiguration(task_push_notification_config=config),
            )
            try:
                await stub.SendMessage(request, metadata=metadata)
            except grpc.aio.AioRpcError as refused:
                assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused
    assert_clean(server, since)


def test_the_sdk_records_the_filters_rely_on() -> None:
    """Pins the a2a-sdk's log calls that ClientErrorRecords rewrites: if an upgrade
    changes them, this fails, and the filter must be looked at again (the
    end-to-end tests above would then show any leak too)."""
    import importlib
    import inspect

    from a2a.server.routes import jsonrpc_dispatcher
    from a2a.utils import error_handlers

    # After the dispatcher, which imports it (imported first, it is a circular import).
    jsonrpc_adapter = importlib.import_module("a2a.compat.v0_3.jsonrpc_adapter")

    assert "logger.exception(\n                    'Failed to validate base JSON-RPC request for v0.3'" in inspect.getsource(jsonrpc_adapter)
    dispatcher = inspect.getsource(jsonrpc_dispatcher)
    assert "logger.exception('Failed to parse request params')" in dispatcher
    assert "\"Request Error (ID: %s): Code=%s, Message='%s'%s\"" in dispatcher
    assert "f', Data={data}' if data else ''" in dispatcher
    from a2a.server.request_handlers import request_handler

    assert "logging.getLogger(__name__).error(\n                        'Validation failure: %s', final_message" in inspect.getsource(request_handler)
    handlers = inspect.getsource(error_handlers)
    assert "logger.warning('Parse error: %s', str(error))" in handlers
    assert "f', Data={error.data}' if error.data else ''" in handlers


def test_parser_errors_quote_the_input_and_the_filter_drops_it() -> None:
    import logging

    from a2a.compat.v0_3 import types as types_v03
    from a2a.types.a2a_pb2 import TaskPushNotificationConfig

    from molecule_runtime.observability.redaction import ClientErrorRecords, RedactWebhookSecrets

    bad = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tasks/pushNotificationConfig/set",
        "params": {"taskId": "t", "pushNotificationConfig": {"url": [secret("url")]}},
    }
    failures: list[BaseException] = []
    try:
        types_v03.SetTaskPushNotificationConfigRequest.model_validate(bad)
    except Exception as exc:
        failures.append(exc)
    try:
        ParseDict({"authentication": [secret("credentials")]}, TaskPushNotificationConfig())
    except Exception as exc:
        failures.append(exc)
    assert len(failures) == 2
    formatter = logging.Formatter("%(levelname)s %(message)s")
    for failure in failures:
        assert MARK in str(failure)  # what the SDK would log
        record = logging.LogRecord(
            "a2a.compat.v0_3.jsonrpc_adapter", logging.ERROR, __file__, 1, "Failed", None,
            (type(failure), failure, failure.__traceback__),
        )
        ClientErrorRecords().filter(record)
        text = formatter.format(record)
        assert MARK not in text and "Traceback" not in text
        assert text.startswith("WARNING ") and type(failure).__name__ in text
    record = logging.LogRecord(
        "a2a.server.routes.jsonrpc_dispatcher", logging.WARNING, __file__, 1,
        "Request Error (ID: %s): Code=%s, Message='%s'%s", (1, -32602, "Invalid params", f", Data={failures[1]}"), None,
    )
    ClientErrorRecords().filter(record)
    assert MARK not in record.getMessage()
    body = {"params": {"url": [secret("u")], "Token": {"a": secret("t")}, "authentication": secret("c"), "task_push_notification_config": [secret("p")]}}
    record = logging.LogRecord("a2a.x", logging.DEBUG, __file__, 1, "Request body: %s", (body,), None)
    RedactWebhookSecrets().filter(record)
    assert MARK not in record.getMessage()
