"""The official A2A JavaScript SDK (@a2a-js/sdk, from npm) drives the runtime over JSON-RPC
and HTTP+JSON: card, send, stream, get, list, cancel, subscribe (and a replay with
Last-Event-ID), a multi-turn question, files and data, and a refused credential; direct
mode with a bearer token, and durable mode (real Temporal). The checks themselves are in
tests/support/js_sdk_checks.mjs; each must answer "ok"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
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


@pytest.fixture(scope="module", params=["direct+auth", pytest.param("durable", marks=pytest.mark.temporal)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    workdir = tmp_path_factory.mktemp(f"js-{request.param.replace('+', '-')}")
    mode = "durable" if request.param == "durable" else "direct"
    token = TOKEN if request.param == "direct+auth" else ""
    extra = {"MOLECULE_AUTH_TOKEN": token} if token else {}
    with running_server(workdir, submission_env(mode, request, workdir / "records", **extra)) as server:
        yield server, token


@pytest.mark.parametrize("binding", BINDINGS)
def test_the_js_sdk_reads_us_right(js_sdk: Path, served: tuple[ServerProcess, str], binding: str) -> None:
    server, token = served
    run = subprocess.run(
        ["node", str(CHECKS), server.url, binding, token],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NODE_PATH": str(js_sdk)},
    )
    assert run.returncode == 0, run.stderr[-4000:] + "\n" + server.log()
    checks = json.loads(run.stdout.strip().splitlines()[-1])["checks"]
    expected = {"card", "send", "stream", "get", "list", "cancel", "subscribe", "multi-turn", "files-and-data"}
    assert expected | ({"auth-refused"} if token else set()) == set(checks)
    failed = {name: result for name, result in checks.items() if result != "ok"}
    assert not failed, failed
