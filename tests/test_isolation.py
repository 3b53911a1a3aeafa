"""Per-principal isolation over real HTTP: another principal's task, conversation and
push configs answer exactly like ones that do not exist, on every binding (JSON-RPC
1.0, REST, 0.3 compat), with API keys and with JWTs, in direct and durable mode."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.jwt_issuer import Issuer, serving_issuer
from tests.support.sse import message_json

KEY_A = "alice-key-" + uuid.uuid4().hex
KEY_B = "bob-key-" + uuid.uuid4().hex
HOOK = "http://127.0.0.1:9/hook/secret-path"
# Each word takes 0.2 s: a task stays `working` for the whole test.
SLOW_TEXT = " ".join(["word"] * 600)

V1 = {"A2A-Version": "1.0"}
Request = tuple[str, str, dict[str, Any] | None, dict[str, str]]


def rpc(method: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> Request:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    return "POST", "/", body, {**V1, **(headers or {})}


def rpc03(method: str, params: dict[str, Any]) -> Request:
    return "POST", "/", {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}, {}


def message03(task_id: str) -> dict[str, Any]:
    return {
        "kind": "message",
        "role": "user",
        "messageId": str(uuid.uuid4()),
        "taskId": task_id,
        "parts": [{"kind": "text", "text": "let me in"}],
    }


# Every operation that names a task, as a request for (task id, push config id).
OPERATIONS: dict[str, Callable[[str, str], Request]] = {
    "jsonrpc-get": lambda t, c: rpc("GetTask", {"id": t}),
    "jsonrpc-cancel": lambda t, c: rpc("CancelTask", {"id": t}),
    "jsonrpc-subscribe": lambda t, c: rpc(
        "SubscribeToTask", {"id": t}, {"Accept": "text/event-stream"}
    ),
    "jsonrpc-subscribe-replay": lambda t, c: rpc(
        "SubscribeToTask", {"id": t}, {"Accept": "text/event-stream", "Last-Event-ID": "0"}
    ),
    "jsonrpc-send": lambda t, c: rpc("SendMessage", {"message": message_json("hi", task_id=t)}),
    "jsonrpc-stream": lambda t, c: rpc(
        "SendStreamingMessage",
        {"message": message_json("hi", task_id=t)},
        {"Accept": "text/event-stream"},
    ),
    "jsonrpc-push-create": lambda t, c: rpc(
        "CreateTaskPushNotificationConfig", {"taskId": t, "url": HOOK}
    ),
    "jsonrpc-push-get": lambda t, c: rpc("GetTaskPushNotificationConfig", {"taskId": t, "id": c}),
    "jsonrpc-push-list": lambda t, c: rpc("ListTaskPushNotificationConfigs", {"taskId": t}),
    "jsonrpc-push-delete": lambda t, c: rpc(
        "DeleteTaskPushNotificationConfig", {"taskId": t, "id": c}
    ),
    "rest-get": lambda t, c: ("GET", f"/rest/tasks/{t}", None, V1),
    "rest-cancel": lambda t, c: ("POST", f"/rest/tasks/{t}:cancel", {}, V1),
    "rest-subscribe": lambda t, c: ("GET", f"/rest/tasks/{t}:subscribe", None, V1),
    "rest-subscribe-replay": lambda t, c: (
        "GET",
        f"/rest/tasks/{t}:subscribe",
        None,
        {**V1, "Last-Event-ID": "0"},
    ),
    "rest-send": lambda t, c: (
        "POST",
        "/rest/message:send",
        {"message": message_json("hi", task_id=t)},
        V1,
    ),
    "rest-push-create": lambda t, c: (
        "POST",
        f"/rest/tasks/{t}/pushNotificationConfigs",
        {"url": HOOK},
        V1,
    ),
    "rest-push-get": lambda t, c: ("GET", f"/rest/tasks/{t}/pushNotificationConfigs/{c}", None, V1),
    "rest-push-list": lambda t, c: ("GET", f"/rest/tasks/{t}/pushNotificationConfigs", None, V1),
    "rest-push-delete": lambda t, c: (
        "DELETE",
        f"/rest/tasks/{t}/pushNotificationConfigs/{c}",
        None,
        V1,
    ),
    "v03-get": lambda t, c: rpc03("tasks/get", {"id": t}),
    "v03-cancel": lambda t, c: rpc03("tasks/cancel", {"id": t}),
    "v03-resubscribe": lambda t, c: rpc03("tasks/resubscribe", {"id": t}),
    "v03-send": lambda t, c: rpc03("message/send", {"message": message03(t)}),
    "v03-push-set": lambda t, c: rpc03(
        "tasks/pushNotificationConfig/set",
        {"taskId": t, "pushNotificationConfig": {"url": HOOK}},
    ),
    "v03-push-get": lambda t, c: rpc03(
        "tasks/pushNotificationConfig/get", {"id": t, "pushNotificationConfigId": c}
    ),
    "v03-push-list": lambda t, c: rpc03("tasks/pushNotificationConfig/list", {"id": t}),
    "v03-push-delete": lambda t, c: rpc03(
        "tasks/pushNotificationConfig/delete", {"id": t, "pushNotificationConfigId": c}
    ),
}


def call(http: httpx.Client, credential: str, request: Request) -> httpx.Response:
    method, path, body, headers = request
    headers = {**headers, "Authorization": f"Bearer {credential}"}
    return http.request(method, path, json=body, headers=headers)


def normalised(response: httpx.Response, task_id: str) -> tuple[int, str]:
    """Status and body with the task id (and per-request ids) taken out."""
    text = response.text.replace(task_id, "<task>")
    text = re.sub(r'"messageId":\s*"[^"]+"', '"messageId":"<m>"', text)
    return response.status_code, text


def not_found(response: httpx.Response) -> bool:
    if response.status_code == 404:
        return "NOT_FOUND" in response.text or "not found" in response.text.lower()
    return response.status_code == 200 and "-32001" in response.text


def start_slow_task(http: httpx.Client, credential: str) -> tuple[str, str]:
    """A task of the caller that keeps working: (task id, context id)."""
    reply = call(
        http,
        credential,
        rpc(
            "SendMessage",
            {"message": message_json(SLOW_TEXT), "configuration": {"returnImmediately": True}},
        ),
    )
    task = reply.json()["result"]["task"]
    return task["id"], task["contextId"]


def list_ids(http: httpx.Client, credential: str) -> tuple[set[str], set[str]]:
    """Task ids ListTasks returns on JSON-RPC and on REST."""
    rpc_reply = call(http, credential, rpc("ListTasks", {"pageSize": 100})).json()
    rest_reply = call(http, credential, ("GET", "/rest/tasks?pageSize=100", None, V1)).json()
    return (
        {t["id"] for t in rpc_reply["result"].get("tasks", [])},
        {t["id"] for t in rest_reply.get("tasks", [])},
    )


def check_isolation(base_url: str, cred_a: str, cred_b: str) -> None:
    with httpx.Client(base_url=base_url, timeout=20) as http:
        task_a, context_a = start_slow_task(http, cred_a)
        task_b, _ = start_slow_task(http, cred_b)
        made = call(
            http, cred_a, rpc("CreateTaskPushNotificationConfig", {"taskId": task_a, "url": HOOK})
        )
        config_a = made.json()["result"]["id"]
        try:
            # The owner reaches its task and its push config.
            assert call(http, cred_a, OPERATIONS["jsonrpc-get"](task_a, "")).json()["result"]["id"] == task_a
            own = call(http, cred_a, OPERATIONS["rest-push-get"](task_a, config_a))
            assert own.status_code == 200 and HOOK in own.text

            for name, operation in OPERATIONS.items():
                other = call(http, cred_b, operation(task_a, config_a))
                missing_id = str(uuid.uuid4())
                missing = call(http, cred_b, operation(missing_id, config_a))
                assert not_found(other), (name, other.status_code, other.text)
                assert normalised(other, task_a) == normalised(missing, missing_id), name
                assert HOOK not in other.text and context_a not in other.text, name

            # ListTasks: each sees only its own, on both bindings.
            rpc_a, rest_a = list_ids(http, cred_a)
            rpc_b, rest_b = list_ids(http, cred_b)
            assert task_a in rpc_a and task_a in rest_a and task_b not in rpc_a | rest_a
            assert task_b in rpc_b and task_b in rest_b and task_a not in rpc_b | rest_b

            # A conversation: B's message in A's context gets none of A's turns,
            # and A's task and config are untouched by everything B tried.
            crossed = call(
                http,
                cred_b,
                rpc("SendMessage", {"message": message_json("in your context", context_id=context_a)}),
            ).json()["result"]["task"]
            assert crossed["id"] != task_a
            rpc_a, _ = list_ids(http, cred_a)
            assert crossed["id"] not in rpc_a
            still = call(http, cred_a, OPERATIONS["jsonrpc-get"](task_a, "")).json()["result"]
            assert still["status"]["state"] == "TASK_STATE_WORKING"
            configs = call(http, cred_a, OPERATIONS["rest-push-list"](task_a, "")).json()
            assert [c["id"] for c in configs["configs"]] == [config_a]
        finally:
            for credential, task in ((cred_a, task_a), (cred_b, task_b)):
                call(http, credential, OPERATIONS["rest-cancel"](task, ""))


def base_env(**extra: str) -> dict[str, str]:
    return {
        "RUNTIME": "echo",
        "ADAPTER_OPTIONS": json.dumps({"delay": 0.2}),
        "MOLECULE_PUSH_ALLOW_PRIVATE": "true",
        "MOLECULE_PUSH_MAX_ATTEMPTS": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serving_issuer() as served:
        yield served


def test_api_key_principals_are_isolated_direct(server_factory) -> None:
    server = server_factory(base_env(MOLECULE_API_KEYS=f"alice:{KEY_A},bob:{KEY_B}"))
    check_isolation(server.url, KEY_A, KEY_B)


def test_jwt_principals_are_isolated_direct(server_factory, issuer: Issuer) -> None:
    server = server_factory(base_env(**issuer.env()))
    check_isolation(server.url, issuer.token("alice"), issuer.token("bob"))


def test_principals_are_isolated_durable(server_factory, temporal_server, issuer: Issuer) -> None:
    queue = f"q-{uuid.uuid4().hex[:10]}"
    env = base_env(
        MOLECULE_API_KEYS=f"alice:{KEY_A}",
        TEMPORAL_HOST=temporal_server.address,
        TEMPORAL_TASK_QUEUE=queue,
        WORKSPACE_ID=f"ws-{queue}",
        **issuer.env(),
    )
    server = server_factory(env)
    assert httpx.get(server.url + "/readyz", timeout=5).json()["mode"] == "durable"
    # One principal by API key, the other by JWT: both kinds side by side.
    check_isolation(server.url, KEY_A, issuer.token("bob"))


def test_same_key_name_in_the_shared_token_and_keys_stays_apart(server_factory) -> None:
    """The shared token is its own principal, apart from every named key."""
    token = "shared-" + uuid.uuid4().hex
    server = server_factory(
        base_env(MOLECULE_AUTH_TOKEN=token, MOLECULE_API_KEYS=f"alice:{KEY_A}")
    )
    check_isolation(server.url, token, KEY_A)


def test_durable_task_finished_headless_after_a_crash_stays_its_owners(
    server_factory, temporal_server, tmp_path
) -> None:
    """The process dies mid-task; Temporal retries the stage in the restarted process,
    which has no client stream and writes to the store itself, as the task's owner:
    the owner reads the finished task, the other principal still cannot see it."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    env = base_env(
        MOLECULE_API_KEYS=f"alice:{KEY_A},bob:{KEY_B}",
        TEMPORAL_HOST=temporal_server.address,
        TEMPORAL_TASK_QUEUE=queue,
        WORKSPACE_ID=f"ws-{queue}",
        MOLECULE_INSTANCE_ID=f"iso-{queue}",
        TEMPORAL_HEARTBEAT_TIMEOUT="2",
        TEMPORAL_RETRY_INITIAL_INTERVAL="0.2",
        TEMPORAL_SCHEDULE_TO_START_TIMEOUT="3",
        ADAPTER_OPTIONS=json.dumps({"delay": 0.1}),
    )
    workdir = tmp_path / "crashing"
    first = server_factory(env, workdir=workdir)
    words = " ".join(f"w{i}" for i in range(60))
    with httpx.Client(base_url=first.url, timeout=30) as http:
        reply = call(
            http,
            KEY_A,
            rpc(
                "SendMessage",
                {"message": message_json(words), "configuration": {"returnImmediately": True}},
            ),
        )
        task_id = reply.json()["result"]["task"]["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = call(http, KEY_A, OPERATIONS["jsonrpc-get"](task_id, "")).json()["result"]
            if got.get("artifacts"):
                break
            time.sleep(0.1)
        assert got.get("artifacts"), got
    first.kill()
    second = server_factory(env, workdir=workdir, port=first.port)
    with httpx.Client(base_url=second.url, timeout=30) as http:
        deadline = time.monotonic() + 90
        state = ""
        while time.monotonic() < deadline:
            got = call(http, KEY_A, OPERATIONS["jsonrpc-get"](task_id, "")).json()["result"]
            state = got["status"]["state"]
            if state == "TASK_STATE_COMPLETED":
                break
            time.sleep(0.3)
        assert state == "TASK_STATE_COMPLETED", got
        text = "".join(p.get("text", "") for a in got["artifacts"] for p in a["parts"])
        assert text == words
        assert "runs headless" in second.log_path.read_text(errors="replace")
        assert not_found(call(http, KEY_B, OPERATIONS["rest-get"](task_id, "")))
        rpc_b, rest_b = list_ids(http, KEY_B)
        assert task_id not in rpc_b | rest_b


def test_principals_are_isolated_with_the_memory_store(server_factory) -> None:
    """The in-memory store (live-only subscriptions, in-memory push configs) too."""
    server = server_factory(
        base_env(MOLECULE_API_KEYS=f"alice:{KEY_A},bob:{KEY_B}", TASK_STORE_URL="memory")
    )
    check_isolation(server.url, KEY_A, KEY_B)


def test_tenants_of_a_key_file_issuer_are_isolated(server_factory, tmp_path) -> None:
    """JWTs checked against a local PEM key; the same `sub` in two tenants is two principals."""
    from cryptography.hazmat.primitives import serialization

    issuer = Issuer()
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(
        issuer.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = {
        **issuer.env(),
        "MOLECULE_JWT_KEY_FILE": str(pem),
        "MOLECULE_JWT_TENANT_CLAIM": "tid",
    }
    del env["MOLECULE_JWT_JWKS_URL"]
    server = server_factory(base_env(**env))
    check_isolation(server.url, issuer.token("sam", tid="acme"), issuer.token("sam", tid="globex"))


def test_principals_are_isolated_on_postgresql_durable(
    server_factory, temporal_server, postgres
) -> None:
    """The production store: PostgreSQL, durable mode, two replicas sharing it. The
    other principal is refused on the replica that does not run the task as well."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    env = base_env(
        MOLECULE_API_KEYS=f"alice:{KEY_A},bob:{KEY_B}",
        TASK_STORE_URL=postgres.database(),
        TEMPORAL_HOST=temporal_server.address,
        TEMPORAL_TASK_QUEUE=queue,
        WORKSPACE_ID=f"ws-{queue}",
    )
    first = server_factory({**env, "MOLECULE_INSTANCE_ID": f"a-{queue}"})
    second = server_factory({**env, "MOLECULE_INSTANCE_ID": f"b-{queue}"})
    check_isolation(first.url, KEY_A, KEY_B)
    with (
        httpx.Client(base_url=first.url, timeout=20) as on_first,
        httpx.Client(base_url=second.url, timeout=20) as on_second,
    ):
        task_a, _ = start_slow_task(on_first, KEY_A)
        try:
            assert call(on_second, KEY_A, OPERATIONS["rest-get"](task_a, "")).status_code == 200
            assert not_found(call(on_second, KEY_B, OPERATIONS["rest-get"](task_a, "")))
            assert not_found(call(on_second, KEY_B, OPERATIONS["jsonrpc-cancel"](task_a, "")))
        finally:
            call(on_first, KEY_A, OPERATIONS["rest-cancel"](task_a, ""))
