"""The official A2A JavaScript SDK (@a2a-js/sdk, from npm) drives the runtime over JSON-RPC
and HTTP+JSON: card, send, stream, get, list, cancel, subscribe (and a replay with
Last-Event-ID), a multi-turn question, files and data, push configs (the webhook, on
127.0.0.1, must get the task's state changes with the config's token) and a refused
credential; direct mode with a bearer token, and durable mode (real Temporal). The checks
themselves are in tests/support/js_sdk_checks.mjs; each must answer "ok"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.node_tool import node_modules
from tests.support.procs import ServerProcess, running_server
from tests.test_submission import submission_env

JS_SDK_VERSION = "1.3.0"
CHECKS = Path(__file__).parent / "support" / "js_sdk_checks.mjs"
TOKEN = "js-token-" + uuid.uuid4().hex
BINDINGS = ["JSONRPC", "HTTP+JSON"]

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@pytest.fixture(scope="module")
def js_sdk() -> Path:
    return node_modules(f"a2a-js-sdk-{JS_SDK_VERSION}", [f"@a2a-js/sdk@{JS_SDK_VERSION}"])


class Webhook:
    """A push-notification receiver on 127.0.0.1: (token, body) of every POST."""

    def __init__(self) -> None:
        received: list[tuple[str | None, dict]] = []
        self.received = received

        class Receive(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.headers.get("X-A2A-Notification-Token"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self, token: str) -> list[str]:
        found = []
        for sent, body in self.received:
            if sent == token:
                event = body.get("statusUpdate") or body.get("task") or {}
                found.append(event.get("status", {}).get("state"))
        return found


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module", params=["direct+auth", pytest.param("durable", marks=pytest.mark.temporal)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    workdir = tmp_path_factory.mktemp(f"js-{request.param.replace('+', '-')}")
    mode = "durable" if request.param == "durable" else "direct"
    token = TOKEN if request.param == "direct+auth" else ""
    extra = {"MOLECULE_PUSH_ALLOW_PRIVATE": "true"}
    if token:
        extra["MOLECULE_AUTH_TOKEN"] = token
    with running_server(workdir, submission_env(mode, request, workdir / "records", **extra)) as server:
        yield server, token


@pytest.mark.parametrize("binding", BINDINGS)
def test_the_js_sdk_reads_us_right(
    js_sdk: Path, served: tuple[ServerProcess, str], webhook: Webhook, binding: str
) -> None:
    server, token = served
    webhook.received.clear()
    run = subprocess.run(
        ["node", str(CHECKS), server.url, binding, token, webhook.url],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NODE_PATH": str(js_sdk)},
    )
    assert run.returncode == 0, run.stderr[-4000:] + "\n" + server.log()
    checks = json.loads(run.stdout.strip().splitlines()[-1])["checks"]
    expected = {"card", "send", "stream", "get", "list", "cancel", "subscribe", "multi-turn", "files-and-data", "push"}
    assert expected | ({"auth-refused"} if token else set()) == set(checks)
    failed = {name: result for name, result in checks.items() if result != "ok"}
    assert not failed, failed
    # The webhook got the answer's turn with the config's token (delivery is in the background).
    deadline = time.monotonic() + 30
    while "TASK_STATE_COMPLETED" not in webhook.states(f"js-push-{binding}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "TASK_STATE_COMPLETED" in webhook.states(f"js-push-{binding}"), webhook.received
