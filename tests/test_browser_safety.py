"""Safe with auth off: a web page cannot drive the agent with cross-site "simple"
requests, nor read it through DNS rebinding; the official clients keep working."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from molecule_runtime.config import Settings
from molecule_runtime.server.browsers import allowed_hosts, host_name, is_json
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import message_json

V1 = {"A2A-Version": "1.0"}


def v03_send() -> dict:
    message = {
        "kind": "message",
        "role": "user",
        "messageId": str(uuid.uuid4()),
        "parts": [{"kind": "text", "text": "from a web page"}],
    }
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # The README's local default: auth off, bound to 127.0.0.1.
    with running_server(tmp_path_factory.mktemp("browsers")) as started:
        yield started


def task_count(server: ServerProcess) -> int:
    reply = httpx.get(server.url + "/rest/tasks?pageSize=100", headers=V1, timeout=10)
    return len(reply.json().get("tasks", []))


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
@pytest.mark.parametrize("origin", ["http://evil.example", "null", None])
def test_cross_site_simple_requests_are_refused(
    server: ServerProcess, content_type: str, origin: str | None
) -> None:
    import json

    before = task_count(server)
    headers = {"Content-Type": content_type}
    if origin is not None:
        headers["Origin"] = origin
    body = json.dumps(v03_send())
    for path, payload in (
        ("/", body),
        ("/rest/message:send", json.dumps({"message": message_json("x")})),
        ("/acme/rest/message:send", json.dumps({"message": message_json("x")})),
    ):
        reply = httpx.post(server.url + path, content=payload, headers={**V1, **headers}, timeout=10)
        assert reply.status_code in (403, 415), (path, reply.status_code, reply.text)
        assert "MOLECULE_CORS_ORIGINS" in reply.text or "application/json" in reply.text
    assert task_count(server) == before


def test_foreign_origin_is_refused_even_with_json(server: ServerProcess) -> None:
    before = task_count(server)
    headers = {**V1, "Origin": "http://evil.example"}
    reply = httpx.post(server.url + "/", json=v03_send(), headers=headers, timeout=10)
    assert reply.status_code == 403, reply.text
    # A body-less POST (the REST cancel) from another origin too.
    cancel = httpx.post(server.url + f"/rest/tasks/{uuid.uuid4()}:cancel", headers=headers, timeout=10)
    assert cancel.status_code == 403
    assert task_count(server) == before


def test_same_origin_and_no_origin_are_served(server: ServerProcess) -> None:
    """The console's page (same origin) and non-browser clients (no Origin)."""
    for origin in (server.url, f"http://localhost:{server.port}", None):
        headers = {} if origin is None else {"Origin": origin}  # 0.3: no A2A-Version
        host = {} if origin is None or "127.0.0.1" in origin else {"Host": f"localhost:{server.port}"}
        reply = httpx.post(server.url + "/", json=v03_send(), headers={**headers, **host}, timeout=10)
        assert reply.status_code == 200, (origin, reply.text)
        assert "result" in reply.json(), reply.text
        assert reply.json()["result"]["status"]["state"] == "completed"
    # A body-less POST (the a2a-sdk REST client's cancel) needs no Content-Type.
    cancel = httpx.post(server.url + f"/rest/tasks/{uuid.uuid4()}:cancel", headers=V1, timeout=10)
    assert cancel.status_code == 404, cancel.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil.example", "[::2]"])
def test_dns_rebinding_hosts_are_refused(server: ServerProcess, host: str) -> None:
    for method, path in (("GET", "/rest/tasks"), ("GET", "/console/config"), ("POST", "/"), ("GET", "/.well-known/agent-card.json")):
        kwargs = {"json": v03_send()} if method == "POST" else {}
        reply = httpx.request(method, server.url + path, headers={**V1, "Host": host}, timeout=10, **kwargs)
        assert reply.status_code == 421, (host, path, reply.status_code)
        assert "MOLECULE_ALLOWED_HOSTS" in reply.text


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1", "127.0.0.1", "[::1]:8000", "localhost."])
def test_loopback_names_are_served_on_any_port(server: ServerProcess, host: str) -> None:
    reply = httpx.get(server.url + "/rest/tasks", headers={**V1, "Host": host}, timeout=10)
    assert reply.status_code == 200, (host, reply.text)


def test_probes_are_served_whatever_the_host(server: ServerProcess) -> None:
    for path in ("/healthz", "/readyz"):
        assert httpx.get(server.url + path, headers={"Host": "10.1.2.3:8000"}, timeout=10).status_code == 200


def test_allowed_hosts_and_cors_origins(tmp_path) -> None:
    env = {
        "MOLECULE_ALLOWED_HOSTS": "agent.example.com, 127.0.0.1",
        "MOLECULE_CORS_ORIGINS": "https://app.example.com",
    }
    with running_server(tmp_path, env) as server:
        named = httpx.get(server.url + "/rest/tasks", headers={**V1, "Host": "agent.example.com"}, timeout=10)
        assert named.status_code == 200
        # A named list replaces the default one.
        assert httpx.get(server.url + "/rest/tasks", headers={**V1, "Host": "localhost"}, timeout=10).status_code == 421
        app = {"Origin": "https://app.example.com"}
        preflight = httpx.options(
            server.url + "/",
            headers={**app, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,a2a-version,authorization"},
            timeout=10,
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        sent = httpx.post(server.url + "/", json=v03_send(), headers={**V1, **app}, timeout=10)
        assert sent.status_code == 200 and sent.headers["access-control-allow-origin"] == "https://app.example.com"
        other = httpx.post(server.url + "/", json=v03_send(), headers={**V1, "Origin": "https://evil.example"}, timeout=10)
        assert other.status_code == 403
    (tmp_path / "any").mkdir()
    with running_server(tmp_path / "any", {"MOLECULE_ALLOWED_HOSTS": "*"}) as server:
        assert httpx.get(server.url + "/rest/tasks", headers={**V1, "Host": "anything.example"}, timeout=10).status_code == 200


def test_default_host_list() -> None:
    loopback = {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts(Settings(host="127.0.0.1")) == loopback
    assert allowed_hosts(Settings(host="0.0.0.0")) == loopback
    assert allowed_hosts(Settings(host="0.0.0.0", public_url="https://Agent.Example.com/a2a")) == loopback | {"agent.example.com"}
    assert allowed_hosts(Settings(host="10.1.2.3")) == loopback | {"10.1.2.3"}
    assert allowed_hosts(Settings(host="::1")) == loopback
    assert allowed_hosts(Settings(allowed_hosts="*")) is None
    assert host_name("[::1]:80") == "::1" and host_name("Example.COM.:443") == "example.com"
    assert is_json("application/json; charset=utf-8") and is_json("application/a2a+json")
    assert not is_json("text/plain") and not is_json("application/jsonx")
