"""Webhook hardening: the POST goes to the address that passed the policy (a rebinding
resolver cannot redirect it), IPv6 forms embedding a non-public IPv4 are refused,
configs per task and deliveries at once are bounded, push credentials are encrypted
at rest, and no webhook URL path, query or token reaches the log, even at DEBUG."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.server.context import ServerCallContext
from a2a.server.tasks import InMemoryPushNotificationConfigStore
from a2a.types.a2a_pb2 import (
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from cryptography.fernet import Fernet

from molecule_runtime.push import PushNotifier
from molecule_runtime.push_policy import WebhookPolicy, is_public
from tests.support.sse import message_json

V1 = {"A2A-Version": "1.0"}
SECRET_PATH = "/hooks/T0SECRETPATH/B0SECRETPART"
SECRET_QUERY = "sig=Q0SECRETQUERY"
TOKEN = "notification-token-" + uuid.uuid4().hex
CREDENTIALS = "basic-credentials-" + uuid.uuid4().hex


class Listener:
    """An HTTP listener on 127.0.0.1 recording each request; `hold` seconds per request."""

    def __init__(self, hold: float = 0.0) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.active = 0
        self.most_at_once = 0
        self.lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with listener.lock:
                    listener.active += 1
                    listener.most_at_once = max(listener.most_at_once, listener.active)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(hold)
                with listener.lock:
                    listener.active -= 1
                    listener.requests.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    try:
        yield served
    finally:
        served.close()


# --- the address policy ------------------------------------------------------

NON_PUBLIC = [
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:0a00:0001::1",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "2001:0:0a00:0001:8000:63bf:3fff:fdd2",  # Teredo, server 10.0.0.1
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::ffff:10.0.0.1",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "::1",
    "fe80::1",
    "fc00::1",
    "127.0.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
]
PUBLIC = ["8.8.8.8", "2002:0808:0808::1", "2606:4700:4700::1111", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_and_embedded_ipv4_are_refused(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert is_public(address)


async def test_registration_takes_a_name_that_does_not_resolve_and_refuses_private_ones() -> None:
    private = {"inside.example": ["10.0.0.7"], "mixed.example": ["8.8.8.8", "127.0.0.1"]}

    async def resolver(host: str, port: int) -> list[str]:
        if host in private:
            return private[host]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    policy = WebhookPolicy(resolver=resolver)
    assert await policy.validate("https://hooks.not-published-yet.example/x")
    # Delivery resolves again: still nothing to post to, so no target.
    assert await policy.target("https://hooks.not-published-yet.example/x") is None
    for url in ("https://inside.example/x", "https://mixed.example/x", "http://127.0.0.1/x",
                "ftp://hooks.example/x", "https:///x"):
        assert not await policy.validate(url), url
    # The system resolver: `.invalid` never resolves (RFC 6761), `localhost` is loopback.
    assert await WebhookPolicy().validate("https://hook.invalid/x")
    assert not await WebhookPolicy().validate("http://localhost:8080/x")


def status_event(task_id: str, state: TaskState = TaskState.TASK_STATE_WORKING) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))


async def registered(store: InMemoryPushNotificationConfigStore, task_id: str, url: str, n: int = 1) -> None:
    for i in range(n):
        config = TaskPushNotificationConfig(task_id=task_id, id=f"cfg-{i}", url=url, token=TOKEN)
        await store.set_info(task_id, config, ServerCallContext())


async def settle(notifier: PushNotifier, timeout: float = 10.0) -> None:
    """Until every delivery worker of the notifier has finished."""
    if notifier._workers:
        await asyncio.wait(list(notifier._workers), timeout=timeout)


async def test_rebinding_resolver_cannot_redirect_the_post(listener: Listener) -> None:
    """Public at the check, loopback afterwards: the one resolution per delivery is
    the address checked and connected to, so loopback is refused, never reached."""
    answers = iter([["8.8.8.8"]] + [["127.0.0.1"]] * 10)
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    store = InMemoryPushNotificationConfigStore()
    notifier = PushNotifier(store, resolver=rebinding, max_attempts=1)
    url = f"http://rebind.test:{listener.port}/hook"
    try:
        assert await notifier.validate_url(url)  # registration: public
        await registered(store, "t-1", url)
        notifier.notify("t-1", status_event("t-1"))
        await settle(notifier)
    finally:
        await notifier.aclose()
    assert listener.requests == []
    assert len(calls) == 2  # the check, then exactly one resolution for the delivery


async def test_post_connects_to_the_resolved_address(listener: Listener) -> None:
    """A name the system cannot resolve (.invalid) still reaches the listener: the
    client connected to the address the policy resolved, with the name in Host."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    store = InMemoryPushNotificationConfigStore()
    notifier = PushNotifier(store, resolver=resolver, allow_private=True, max_attempts=1)
    url = f"http://hook.invalid:{listener.port}{SECRET_PATH}?{SECRET_QUERY}"
    try:
        await registered(store, "t-2", url)
        notifier.notify("t-2", status_event("t-2"))
        await settle(notifier)
    finally:
        await notifier.aclose()
    [(path, headers, body)] = listener.requests
    assert path == f"{SECRET_PATH}?{SECRET_QUERY}"
    assert headers["Host"] == f"hook.invalid:{listener.port}"
    assert headers["X-A2A-Notification-Token"] == TOKEN
    assert body["statusUpdate"]["taskId"] == "t-2"


async def test_https_target_keeps_the_name_for_sni() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["2606:4700:4700::1111"]

    target = await WebhookPolicy(resolver=resolver).target("https://hooks.example.com/x?y=1")
    assert target is not None
    assert target.url == "https://[2606:4700:4700::1111]/x?y=1"
    assert target.headers == {"Host": "hooks.example.com"}
    assert target.extensions == {"sni_hostname": "hooks.example.com"}


async def test_deliveries_to_one_task_are_bounded_in_concurrency() -> None:
    slow = Listener(hold=0.3)
    store = InMemoryPushNotificationConfigStore()
    notifier = PushNotifier(store, allow_private=True, max_attempts=1, max_concurrent=2)
    try:
        await registered(store, "t-3", f"http://127.0.0.1:{slow.port}/hook", n=6)
        notifier.notify("t-3", status_event("t-3"))
        await settle(notifier)
    finally:
        await notifier.aclose()
        slow.close()
    assert len(slow.requests) == 6
    assert slow.most_at_once == 2


# --- over a real server ---------------------------------------------------------


def create_config(http: httpx.Client, task_id: str, url: str, config_id: str = "") -> httpx.Response:
    body: dict[str, Any] = {"url": url, "token": TOKEN}
    if config_id:
        body["id"] = config_id
    return http.post(f"/rest/tasks/{task_id}/pushNotificationConfigs", json=body, headers=V1)


def make_task(http: httpx.Client) -> str:
    reply = http.post("/rest/message:send", json={"message": message_json("hi")}, headers=V1)
    return reply.json()["task"]["id"]


@pytest.mark.parametrize(
    "host", ["[2002:a9fe:a9fe::1]", "[2001:0:4136:e378:8000:63bf:f5ff:fffe]", "[::7f00:1]"]
)
def test_server_refuses_webhooks_embedding_private_ipv4(server_factory, host: str) -> None:
    server = server_factory({"RUNTIME": "echo"})
    with httpx.Client(base_url=server.url, timeout=10) as http:
        task_id = make_task(http)
        reply = create_config(http, task_id, f"http://{host}/hook")
    assert reply.status_code == 400, reply.text
    assert "invalid push notification url" in reply.text.lower()


def test_too_many_configs_per_task(server_factory, listener: Listener) -> None:
    server = server_factory(
        {"RUNTIME": "echo", "MOLECULE_PUSH_ALLOW_PRIVATE": "true", "MOLECULE_PUSH_MAX_CONFIGS_PER_TASK": "2"}
    )
    url = f"http://127.0.0.1:{listener.port}/hook"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        task_id = make_task(http)
        assert create_config(http, task_id, url, "a").status_code == 200
        assert create_config(http, task_id, url, "b").status_code == 200
        third = create_config(http, task_id, url, "c")
        assert third.status_code == 400
        assert "MOLECULE_PUSH_MAX_CONFIGS_PER_TASK=2" in third.text
        assert create_config(http, task_id, url + "2", "b").status_code == 200  # a replacement
        rpc = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "CreateTaskPushNotificationConfig",
            "params": {"taskId": task_id, "id": "d", "url": url},
        }
        refused = http.post("/", json=rpc, headers=V1).json()
        assert refused["error"]["code"] == -32602
        listed = http.get(f"/rest/tasks/{task_id}/pushNotificationConfigs", headers=V1).json()
        assert sorted(c["id"] for c in listed["configs"]) == ["a", "b"]


def test_no_webhook_secret_in_the_log_at_debug(server_factory, listener: Listener) -> None:
    server = server_factory(
        {
            "RUNTIME": "echo",
            "ADAPTER_OPTIONS": json.dumps({"delay": 0.5}),  # runs while configs are added
            "LOG_LEVEL": "DEBUG",
            "MOLECULE_PUSH_ALLOW_PRIVATE": "true",
            "MOLECULE_PUSH_MAX_ATTEMPTS": "2",
            "MOLECULE_PUSH_RETRY_INITIAL_INTERVAL": "0.1",
        }
    )
    good = f"http://127.0.0.1:{listener.port}{SECRET_PATH}?{SECRET_QUERY}"
    dead = f"http://127.0.0.1:9{SECRET_PATH}-dead?{SECRET_QUERY}"
    auth = {"scheme": "Basic", "credentials": CREDENTIALS}
    config = {"url": good, "token": TOKEN, "authentication": auth}
    with httpx.Client(base_url=server.url, timeout=20) as http:
        # A config given with the message (JSON-RPC 1.0), one created on REST, one on 0.3.
        rpc = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {
                "message": message_json("one two three four"),
                "configuration": {"taskPushNotificationConfig": config, "returnImmediately": True},
            },
        }
        task_id = http.post("/", json=rpc, headers=V1).json()["result"]["task"]["id"]
        assert create_config(http, task_id, dead, "dead").status_code == 200
        v03 = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tasks/pushNotificationConfig/set",
            "params": {
                "taskId": task_id,
                "pushNotificationConfig": {"id": "v03", "url": good + "&v=03", "token": TOKEN},
            },
        }
        assert "error" not in http.post("/", json=v03).json()
        http.get(f"/rest/tasks/{task_id}/pushNotificationConfigs", headers=V1)
        # The task's last state changes go to all three webhooks; the dead one fails.
        deadline = time.monotonic() + 30
        log = ""
        while time.monotonic() < deadline:
            log = server.log_path.read_text(errors="replace")
            if "push config dead failed" in log and any(
                "&v=03" in path and body.get("statusUpdate", {}).get("status", {}).get("state")
                == "TASK_STATE_COMPLETED"
                for path, _, body in listener.requests
            ):
                break
            time.sleep(0.1)
    assert "push config dead failed" in log  # the failure is logged, by config id
    assert listener.requests, "no webhook was called"
    _, headers, _ = listener.requests[0]
    assert headers["Authorization"] == f"Basic {CREDENTIALS}"
    log = server.log_path.read_text(errors="replace")
    assert " DEBUG " in log
    for secret in ("T0SECRETPATH", "B0SECRETPART", "Q0SECRETQUERY", TOKEN, CREDENTIALS):
        assert secret not in log, secret


def test_push_credentials_encrypted_at_rest(server_factory, listener: Listener) -> None:
    key = Fernet.generate_key().decode()
    server = server_factory(
        {
            "RUNTIME": "echo",
            "MOLECULE_PUSH_ALLOW_PRIVATE": "true",
            "MOLECULE_PUSH_ENCRYPT": "true",
            "MOLECULE_PUSH_ENCRYPTION_KEY": key,
        }
    )
    url = f"http://127.0.0.1:{listener.port}{SECRET_PATH}"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        task_id = make_task(http)
        assert create_config(http, task_id, url, "enc").status_code == 200
        read = http.get(f"/rest/tasks/{task_id}/pushNotificationConfigs/enc", headers=V1).json()
    assert read["url"] == url and read["token"] == TOKEN
    database = Path(server.env["MOLECULE_DATA_DIR"]) / "tasks.db"
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT config_data FROM push_notification_configs").fetchall()
    assert rows
    for (data,) in rows:
        raw = bytes(data)
        assert TOKEN.encode() not in raw and b"SECRETPATH" not in raw
        assert json.loads(Fernet(key.encode()).decrypt(raw))["token"] == TOKEN


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MOLECULE_PUSH_ENCRYPT": "true"}, "MOLECULE_PUSH_ENCRYPT=true needs MOLECULE_PUSH_ENCRYPTION_KEY"),
        ({"MOLECULE_PUSH_ENCRYPTION_KEY": "not-a-fernet-key"}, "is not a Fernet key"),
    ],
)
def test_encryption_asked_without_a_usable_key_stops_start_up(
    tmp_path: Path, env: dict, expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "molecule_runtime", "serve"],
        env={"PATH": "/usr/bin:/bin", "MOLECULE_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "not-a-fernet-key" not in result.stderr


def tls_listener(tmp_path: Path, name: str) -> tuple[ThreadingHTTPServer, ssl.SSLContext]:
    """An https listener on 127.0.0.1 with a self-signed certificate for `name`, and a
    client context that trusts exactly that certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    served = Listener()
    served.server.socket = ssl_server_context(cert_path, key_path).wrap_socket(
        served.server.socket, server_side=True
    )
    return served, ssl.create_default_context(cafile=str(cert_path))


def ssl_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def test_https_webhook_checks_the_certificate_for_the_name(tmp_path: Path) -> None:
    """Connected to the resolved address, the TLS check still uses the URL's name:
    the certificate's name passes, another name on the same address does not."""
    served, trust = tls_listener(tmp_path, "hooks.test")

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    store = InMemoryPushNotificationConfigStore()
    notifier = PushNotifier(
        store, resolver=resolver, allow_private=True, max_attempts=1, verify=trust
    )
    try:
        await registered(store, "t-tls", f"https://hooks.test:{served.port}/ok")
        await store.set_info(
            "t-tls",
            TaskPushNotificationConfig(
                task_id="t-tls", id="wrong-name", url=f"https://other.test:{served.port}/no"
            ),
            ServerCallContext(),
        )
        notifier.notify("t-tls", status_event("t-tls"))
        await settle(notifier)
    finally:
        await notifier.aclose()
        served.close()
    assert [path for path, _, _ in served.requests] == ["/ok"]
