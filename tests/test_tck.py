"""The official A2A TCK (a2aproject/a2a-tck 1.0-dev @357c4a8, vendored in tests/vendor) at
MUST level on JSON-RPC, HTTP+JSON and gRPC, against a server that plays its scenarios
(tests/fixtures/tck_adapter.py) with message-id deduplication off: the TCK gives every
message of a scenario the same messageId for the whole run (docs/clients.md).

The TCK runs against a 1.0-only deployment (MOLECULE_A2A_V03_COMPAT=false): it reads the
card without A2A-Version, which A2A 1.0 takes for a 0.3 client, so a default server gives
it the card with the 0.3 fields, which its strict 1.0 schema refuses. The default server's
1.0 card (asked for with A2A-Version: 1.0) is checked against the TCK's own schema below.
Private webhooks are allowed: the TCK receives its push notifications on 127.0.0.1.

The failures it may report are listed in KNOWN, each with why; any other fails this test.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.grpc_client import grpc_env
from tests.support.procs import ServerProcess, running_server
from tests.support.tool_venv import cache_dir, tool_venv

TCK_COMMIT = "357c4a8"
TCK_ARCHIVE = Path(__file__).parent / "vendor" / f"a2a-tck-{TCK_COMMIT}.tar.gz"
TCK_ADAPTER = Path(__file__).parent / "fixtures" / "tck_adapter.py"
TRANSPORTS = "jsonrpc,http_json,grpc"
CARD_PATH = "/.well-known/agent-card.json"


# Test (junit classname.name, without the transport parameter) -> why it may fail here.
KNOWN: dict[str, str] = {}


def tck_python() -> Path:
    return tool_venv(f"a2a-tck-{TCK_COMMIT}-venv", [str(tck_dir())]) / "python"


def tck_dir(copy: str = "") -> Path:
    """The TCK unpacked in the test cache (once per `copy`: each concurrent run writes
    its reports under its working directory, so each binding runs in its own copy)."""
    target = cache_dir() / f"a2a-tck-{TCK_COMMIT}-src{copy and '-' + copy}"
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f"a2a-tck-{TCK_COMMIT}{copy and '-' + copy}.unpack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".unpacked").exists():
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(TCK_ARCHIVE) as archive:
                archive.extractall(target, filter="data")
            (target / ".unpacked").write_text(TCK_COMMIT)
    return target


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("tck")
    env = {
        "ADAPTER_MODULE": str(TCK_ADAPTER),
        "MOLECULE_MESSAGE_ID_DEDUP": "false",
        "MOLECULE_A2A_V03_COMPAT": "false",
        # The TCK receives its push notifications on 127.0.0.1.
        "MOLECULE_PUSH_ALLOW_PRIVATE": "true",
        "STREAM_BATCH_WINDOW": "0",
        **grpc_env(),
    }
    with running_server(workdir, env) as server:
        yield server


def test_the_official_tck_passes_at_must_level(served: ServerProcess, tmp_path: Path) -> None:
    python = tck_python()
    # One TCK run per binding, all at once: most of a run is waiting on streams that
    # stay open until the TCK's own timeouts (10-30 s), not work.
    runs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for transport in TRANSPORTS.split(","):
        junit = tmp_path / f"junit-{transport}.xml"
        log = open(tmp_path / f"tck-{transport}.log", "w")
        runs[transport] = (
            subprocess.Popen(
                [
                    str(python), "run_tck.py", "--sut-host", served.url, "--transport", transport,
                    "--level", "must", "--", f"--junitxml={junit}", "-p", "no:cacheprovider",
                ],
                cwd=tck_dir(transport),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            ),
            junit,
        )
        log.close()
    cases: list[ET.Element] = []
    output = ""
    for transport, (process, junit) in runs.items():
        try:
            process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
        output = (tmp_path / f"tck-{transport}.log").read_text()[-3000:]
        assert junit.exists(), output
        cases.extend(ET.parse(junit).getroot().iter("testcase"))
    # A case each run collects (the card's, a binding's own when another binding runs,
    # then skipped) counts once: failed if it failed in any run, else passed if it ran.
    outcome: dict[str, str | None] = {}
    for case in cases:
        name = f"{case.get('classname', '').removeprefix('tests.compatibility.')}.{case.get('name', '')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            outcome[name] = (problem.get("message") or "")[:300]
        elif case.find("skipped") is None and outcome.get(name, "skipped") == "skipped":
            outcome[name] = None
        else:
            outcome.setdefault(name, "skipped")
    failed = {name: why for name, why in outcome.items() if why not in (None, "skipped")}
    passed = sum(why is None for why in outcome.values())
    # Per binding (the transport parameter of the case), for the docs' table.
    counts: dict[str, list[int]] = {}
    for name, why in outcome.items():
        param = name.rsplit("[", 1)[1] if "[" in name else ""
        binding = next((b for b in ("http_json", "jsonrpc", "grpc") if b in param), "any")
        tally = counts.setdefault(binding, [0, 0])
        tally[0] += why is None
        tally[1] += why not in (None, "skipped")
    print("TCK passed/failed per binding:", counts)
    unexpected = {
        name: message for name, message in failed.items() if name.split("[", 1)[0] not in KNOWN
    }
    assert passed > 150, output
    assert not unexpected, unexpected


# Validates the card on stdin against the TCK's JSON schema; prints the errors.
VALIDATE_CARD = """
import json, sys
from pathlib import Path
from tck.validators.json_schema import JSONSchemaValidator
result = JSONSchemaValidator(Path("specification/a2a.json")).validate(json.load(sys.stdin), "Agent Card")
print(json.dumps(result.errors))
"""


def schema_errors(card: dict) -> list[str]:
    run = subprocess.run(
        [str(tck_python()), "-c", VALIDATE_CARD],
        cwd=tck_dir(),
        input=json.dumps(card),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(run.stdout)


def test_the_default_servers_1_0_card_validates_against_the_tcks_schema(
    tmp_path: Path,
) -> None:
    # Defaults (0.3 compatibility on), with auth and gRPC so that the security schemes
    # and every interface are in the card.
    env = {"MOLECULE_AUTH_TOKEN": "tck-card-token", **grpc_env()}
    with running_server(tmp_path, env) as server:
        v1 = httpx.get(server.url + CARD_PATH, headers={"A2A-Version": "1.0"}, timeout=10)
        plain = httpx.get(server.url + CARD_PATH, timeout=10)
    assert v1.status_code == plain.status_code == 200
    card = v1.json()
    assert card["securitySchemes"] and len(card["supportedInterfaces"]) == 3, card
    assert schema_errors(card) == []
    # A client that names no version (a 0.3 client) still gets what it needs.
    legacy = plain.json()
    assert legacy["url"] and legacy["protocolVersion"] and legacy["preferredTransport"]
    # The schema check can fail: the 0.3 fields are what the TCK's schema refuses.
    assert any("url" in error or "additional" in error.lower() for error in schema_errors(legacy))
