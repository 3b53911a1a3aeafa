"""The a2a-proof conformance runner (third party, its own virtualenv) against real
servers: every binding (JSON-RPC, HTTP+JSON, gRPC), direct and durable (real Temporal),
an agent answering with tasks and one replying with Messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.a2a_proof import a2a_proof_bin, failures, run_contract
from tests.support.durable import own_temporal
from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess
from tests.support.temporal import TemporalDevServer

CONFORMANCE = Path(__file__).resolve().parent / "fixtures" / "conformance"
TRANSPORTS = ["JSONRPC", "HTTP+JSON", "GRPC"]


def conformance_env(temporal: TemporalDevServer | None = None, **options: object) -> dict[str, str]:
    env = {
        "ADAPTER_MODULE": str(CONFORMANCE / "adapter.py"),
        "ADAPTER_OPTIONS": json.dumps(options),
        **grpc_env(),
    }
    if temporal is not None:
        env.update(own_temporal(temporal.address))
    return env


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, temporal_server: TemporalDevServer
) -> Iterator[dict[str, ServerProcess]]:
    """Started together (each takes a second or two to come up), while the runner's
    virtualenv is built or found."""
    root = tmp_path_factory.mktemp("conformance")
    envs = {
        "direct": conformance_env(),
        "durable": conformance_env(temporal_server),
        "message": conformance_env(message_reply=True),
    }
    started: dict[str, ServerProcess] = {}
    try:
        for name, env in envs.items():
            (root / name).mkdir()
            started[name] = ServerProcess(root / name, env).start(wait=False)
        a2a_proof_bin()
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


def check(contract: str, server: ServerProcess, transport: str) -> None:
    report = run_contract(CONFORMANCE / contract, server.url, transport)
    assert report["passed"] and not failures(report), "\n".join(failures(report)) or report
    # Every scenario ran (a failed card check would skip them all).
    names = re.findall(r"^  - name: (.+)$", (CONFORMANCE / contract).read_text(), re.MULTILINE)
    assert [s["name"] for s in report["scenarios"]] == names


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["direct", "durable"])
def test_task_agent_conforms(servers: dict[str, ServerProcess], mode: str, transport: str) -> None:
    check("tasks.yaml", servers[mode], transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_message_agent_conforms(servers: dict[str, ServerProcess], transport: str) -> None:
    check("messages.yaml", servers["message"], transport)
