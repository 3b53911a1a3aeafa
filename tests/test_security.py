"""Security properties: which routes are public, constant-time token compare, no secret in
logs or /readyz, loopback bind by default.

The route inventory is built from the app itself (in-process), so a route added
later, by us or by an a2a-sdk upgrade, fails here until it is classified.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from molecule_runtime.config import Settings
from molecule_runtime.server import auth, principals
from molecule_runtime.server.app import build_app
from molecule_runtime.services import Services
from tests.support.procs import ServerProcess, free_port, running_server, spawn, stop_process

TOKEN = "tok-" + uuid.uuid4().hex
A2A = {"A2A-Version": "1.0"}

# Every route of the app, as (method, path template). HEAD is implied by GET.
EXPECTED_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/agent-card.json"),
    ("POST", "/"),
    # The web console: the page and its files, and its settings.
    ("GET", "/console"),
    ("GET", "/console/"),
    ("GET", "/console/static/{path}"),
    ("GET", "/console/config"),
    # A task's durable steps for the console's timeline (checked like GetTask).
    ("GET", "/console/tasks/{task_id}/steps"),
    *(
        (method, prefix + path)
        for prefix in ("", "/{tenant}")
        for method, path in [
            ("POST", "/rest/message:send"),
            ("POST", "/rest/message:stream"),
            ("POST", "/rest/tasks/{id}:cancel"),
            ("GET", "/rest/tasks/{id}:subscribe"),
            ("POST", "/rest/tasks/{id}:subscribe"),
            ("GET", "/rest/tasks/{id}"),
            ("GET", "/rest/tasks/{id}/pushNotificationConfigs/{push_id}"),
            ("DELETE", "/rest/tasks/{id}/pushNotificationConfigs/{push_id}"),
            ("POST", "/rest/tasks/{id}/pushNotificationConfigs"),
            ("GET", "/rest/tasks/{id}/pushNotificationConfigs"),
            ("GET", "/rest/tasks"),
            ("GET", "/rest/extendedAgentCard"),
        ]
    ),
}
# The only routes answered without the token. /metrics carries no task data
# (counters and histograms by state and mode only).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/agent-card.json"),
    # The console's page holds no data: it asks for the token, then calls the
    # A2A routes with it (/console/config needs it too).
    ("GET", "/console"),
    ("GET", "/console/"),
    ("GET", "/console/static/{path}"),
}


def app_routes(routes: list, prefix: str = "") -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount) and not route.routes:
            # A mounted app without routes of its own (static files): every path below it.
            found.add(("GET", prefix + route.path + "/{path}"))
        elif isinstance(route, Mount):
            found |= app_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            found |= {(m, prefix + route.path) for m in (route.methods or ()) if m != "HEAD"}
        else:
            raise AssertionError(f"unclassified route type {type(route).__name__}: {route}")
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{tenant}", "acme")
        .replace("{id}", "t-1")
        .replace("{push_id}", "p-1")
        .replace("{path}", "main.js")
    )


@pytest.fixture
async def secured_app(tmp_path: Path) -> AsyncIterator[tuple[Services, object]]:
    settings = Settings(auth_token=TOKEN, task_store_url="memory", data_dir=tmp_path)
    services = await Services.open(settings, accept_tasks=True)
    try:
        yield services, build_app(services)
    finally:
        await services.close()


async def test_every_route_is_listed_and_only_the_public_ones_skip_auth(secured_app) -> None:
    _, app = secured_app
    routes = app_routes(app.routes)  # type: ignore[attr-defined]
    assert routes == EXPECTED_ROUTES, (
        f"new: {sorted(routes - EXPECTED_ROUTES)}, gone: {sorted(EXPECTED_ROUTES - routes)}"
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    public: set[tuple[str, str]] = set()
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for method, path in sorted(routes):
            body = b"{}" if method == "POST" else None
            reply = await http.request(method, concrete(path), content=body, headers=A2A)
            if reply.status_code != 401:
                public.add((method, path))
            else:
                assert reply.headers["www-authenticate"].startswith("Bearer")
            # With the token every route is reached (whatever it then answers).
            authed = await http.request(
                method,
                concrete(path),
                content=body,
                headers={**A2A, "Authorization": f"Bearer {TOKEN}"},
            )
            assert authed.status_code != 401, (method, path)
    assert public == PUBLIC


@pytest.mark.parametrize(
    "path",
    [
        "/healthz/",
        "//healthz",
        "/healthz/../rest/tasks",
        "/%2E%2E/rest/tasks",
        "/.well-known/agent-card.json/../../rest/tasks",
        "/acme/.well-known/agent-card.json",
        "/console/config",
        "/console/static/../config",
        "/console/static/..%2Fconfig",
        "/console//config",
        "/rest/tasks?x=/healthz",
        "/unknown",
    ],
)
async def test_paths_that_look_public_still_need_the_token(secured_app, path: str) -> None:
    _, app = secured_app
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        reply = await http.get(path, headers=A2A)
    assert reply.status_code == 401, (path, reply.status_code)


def test_token_compare_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check goes through hmac.compare_digest, against every key, and nothing
    else compares a key."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(principals.hmac, "compare_digest", spy)
    authenticator = principals.build_authenticator(Settings(auth_token=TOKEN))

    def check(header: str) -> bool:
        return asyncio.run(authenticator.authenticate(header.encode())) is not None

    assert check(f"Bearer {TOKEN}")
    assert not check("Bearer wrong")
    assert not check(f"Basic {TOKEN}")  # scheme refused first
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (b"wrong", TOKEN.encode())]
    calls.clear()
    keyed = principals.build_authenticator(
        Settings(auth_token=TOKEN, api_keys="a:0123456789abcdef,b:fedcba9876543210")
    )
    assert asyncio.run(keyed.authenticate(f"Bearer {TOKEN}".encode())) is not None
    assert len(calls) == 3  # a match does not stop the compare: every key is compared
    for module in (auth, principals):
        source = inspect.getsource(module)
        assert "_expected ==" not in source and "== self._expected" not in source
    assert "compare_digest" in inspect.getsource(principals)


def test_settings_redacted_hides_every_secret() -> None:
    settings = Settings(
        auth_token=TOKEN, task_store_url="postgresql+asyncpg://u:db-secret-pw@h:5432/d"
    )
    text = str(settings.redacted())
    assert TOKEN not in text and "db-secret-pw" not in text
    # Pydantic's own repr masks the SecretStr too; the URL is a plain string there.
    assert TOKEN not in repr(settings)


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"MOLECULE_AUTH_TOKEN": TOKEN, "LOG_LEVEL": "DEBUG"}
    with running_server(tmp_path_factory.mktemp("debug-auth"), env) as server:
        yield server


def test_token_never_logged_at_debug(debug_server: ServerProcess) -> None:
    near_misses = [TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" + TOKEN]
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "hi"}]}
        },
    }
    with httpx.Client(base_url=debug_server.url, timeout=10) as http:
        for wrong in near_misses:
            for scheme in ("Bearer", "Basic", ""):
                header = f"{scheme} {wrong}".strip()
                reply = http.post("/", json=body, headers={**A2A, "Authorization": header})
                assert reply.status_code == 401
                assert wrong not in reply.text
        ok = http.post("/", json=body, headers={**A2A, "Authorization": f"Bearer {TOKEN}"})
        assert ok.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        ready = http.get("/readyz").text
        metrics = http.get("/metrics").text
    time.sleep(0.3)  # let the log lines land
    log = debug_server.log_path.read_text(errors="replace")
    assert " DEBUG " in log, "the server did not log at DEBUG level"
    for secret in [TOKEN, *near_misses]:
        assert secret not in log
    assert TOKEN not in ready and TOKEN not in metrics


def test_database_password_not_in_start_up_error_at_debug(tmp_path: Path) -> None:
    """An unreachable PostgreSQL at start-up: the error names the URL without its password."""
    password = "pw-" + uuid.uuid4().hex
    url = f"postgresql+asyncpg://molecule:{password}@127.0.0.1:{free_port()}/tasks"
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "MOLECULE_DATA_DIR": str(tmp_path / "data"),
        "TASK_STORE_URL": url,
        "LOG_LEVEL": "DEBUG",
        "MOLECULE_AUTH_TOKEN": TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "molecule_runtime"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    text = out.decode(errors="replace")
    assert proc.returncode != 0, text
    assert "molecule:***@127.0.0.1" in text or "127.0.0.1" in text, text
    assert password not in text
    assert TOKEN not in text


def test_binds_loopback_by_default(tmp_path: Path) -> None:
    assert Settings().host == "127.0.0.1" or "HOST" in os.environ
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"HOST", "PUBLIC_URL"}}
    env.update({"PORT": str(port), "MOLECULE_DATA_DIR": str(tmp_path / "data")})
    proc = spawn([sys.executable, "-m", "molecule_runtime"], tmp_path / "server.log", env=env)
    try:
        deadline = time.monotonic() + 60
        listening: list[str] = []
        while not listening:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server never listened"
            listening = listeners(proc.pid, port)
            time.sleep(0.1)
        assert listening == ["127.0.0.1"], listening
    finally:
        stop_process(proc)


def listeners(pid: int, port: int) -> list[str]:
    """Local addresses the process listens on at `port`, from /proc/<pid>/net/tcp{,6}."""
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":  # 0A = LISTEN
                continue
            if width == 8:
                raw = bytes.fromhex(address)[::-1]
                found.append(".".join(str(b) for b in raw))
            else:
                found.append("::" if set(address) == {"0"} else address)
    return found
